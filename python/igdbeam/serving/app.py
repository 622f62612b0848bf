"""The HTTP API of ``igdbeam serve`` as a Starlette (ASGI) application.

* ``POST /v1/recommend`` — body ``{"history": [ids or titles], "k": 10, "alpha": 0.2,
  "exclude_history": true, "item_mask": [allowed ids]}`` (only ``history`` is required) ->
  ``{"items": [{"id", "title", "score"}, ...]}``, best first, with a ``Server-Timing``
  header: ``queue;dur=..``, ``decode;dur=..`` (milliseconds in the engine's queue and in the
  decode), ``batch;desc=..`` (requests decoded together) and ``app;dur=..`` (the handler's time,
  body parsing to answer).
* ``GET /health`` — ``{"status": "ok", "engine": ..., "items": ..., counters}``; the counters
  include p50 / p99 of the queue and decode milliseconds of the last 1,024 requests.

Errors are JSON ``{"error": {"field": ..., "message": ...}}``: 400 for a bad body (the field is
named), 404 / 405 for unknown routes and methods, 413 for a body over the limit, 503 when the
queue is full and 500 when a decode fails; none of them stops the server or touches another
request.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from igdbeam.serving.requests import RequestError, parse_request

logger = logging.getLogger("igdbeam.serving")

MAX_BODY_BYTES = 1 << 20


def _error(status: int, field: str, message: str) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status)


async def _read_body(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError("body", "bad Content-Length header") from None
        if size > limit:
            raise RequestError("body", f"is {size} bytes; the limit is {limit}", 413)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise RequestError("body", f"is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def server_timing(timing: dict[str, float], started: float) -> str:
    """The ``Server-Timing`` header of an answer: the engine's ``queue`` / ``decode`` seconds and
    ``batch`` size from ``timing``, and the handler's time since ``started`` (``app``)."""
    parts = [
        f"{name};dur={1000.0 * timing[name]:.3f}" for name in ("queue", "decode") if name in timing
    ]
    if "batch" in timing:
        parts.append(f'batch;desc="{int(timing["batch"])}"')
    parts.append(f"app;dur={1000.0 * (time.perf_counter() - started):.3f}")
    return ", ".join(parts)


def create_app(
    engine: Any,
    *,
    max_k: int = 100,
    default_k: int = 10,
    default_alpha: float = 0.0,
    max_body_bytes: int = MAX_BODY_BYTES,
    close_engine: bool = True,
) -> Any:
    """The Starlette application serving ``engine`` (a ``TransformersEngine`` or ``VLLMEngine``).

    Args:
        engine: has ``catalog``, ``async recommend(request, timing)``, ``describe()`` and
            ``close()``.
        max_k: the largest ``k`` a request may ask for.
        default_k, default_alpha: the values of a request that omits them.
        max_body_bytes: larger bodies get 413.
        close_engine: close the engine when the application shuts down.
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    catalog = engine.catalog

    async def recommend(request: Any) -> Any:
        t0 = time.perf_counter()
        timing: dict[str, float] = {}
        try:
            raw = await _read_body(request, max_body_bytes)
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise RequestError("body", f"is not valid JSON ({exc})") from None
            parsed = parse_request(
                body,
                resolve_item=catalog.resolve,
                max_k=max_k,
                default_k=default_k,
                default_alpha=default_alpha,
            )
            answer = await engine.recommend(parsed, timing)
        except RequestError as exc:
            return _error(exc.status, exc.field, exc.message)
        except Exception as exc:  # a failed decode answers 500; the server goes on
            logger.exception("request failed")
            return _error(500, "server", f"{type(exc).__name__}: {exc}")
        return JSONResponse(answer, headers={"Server-Timing": server_timing(timing, t0)})

    async def health(request: Any) -> Any:
        del request
        return JSONResponse({"status": "ok", "items": catalog.num_items, **engine.describe()})

    async def http_error(request: Any, exc: Any) -> Any:
        del request
        return _error(exc.status_code, "path", str(exc.detail))

    async def server_error(request: Any, exc: Exception) -> Any:
        logger.exception("request %s failed", request.url.path, exc_info=exc)
        return _error(500, "server", f"{type(exc).__name__}: {exc}")

    async def lifespan(app: Any) -> Any:
        del app
        yield
        if close_engine:
            engine.close()

    return Starlette(
        routes=[
            Route("/v1/recommend", recommend, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=_as_context(lifespan),
    )


def _as_context(gen: Any) -> Any:
    from contextlib import asynccontextmanager

    return asynccontextmanager(gen)
