"""The service's two decoding engines: transformers with micro-batching, and vLLM.

* :class:`TransformersEngine` decodes with :func:`igdbeam.generate` on **one worker thread**:
  requests wait in a queue, the worker takes what arrived within ``max_wait_ms`` of the first
  (at most ``max_batch``), groups them by ``(beams, alpha)`` and decodes each group as one
  batch with per-row item masks. One thread owns the model, so no two decodes ever overlap.
* :class:`VLLMEngine` runs :func:`igdbeam.vllm.agenerate` per request on a vLLM ``AsyncLLM``;
  the engine's continuous batching puts concurrent requests' beams into the same forwards.

Both answer ``await engine.recommend(request, timing)`` with the JSON answer of
:meth:`~igdbeam.serving.catalog.ServingCatalog.answer` and, when given a ``timing`` dict, fill
it with the request's seconds in the queue (``queue``) and in its decode (``decode``) and the
size of the batch it was decoded in (``batch``); the service sends them as a ``Server-Timing``
header and ``GET /health`` reports their recent percentiles. A failed decode fails only the
requests it served.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from igdbeam.serving.catalog import ServingCatalog
from igdbeam.serving.requests import RecommendRequest, RequestError


class OverloadedError(RequestError):
    """The queue is full: answered with HTTP 503."""

    def __init__(self, pending: int) -> None:
        """Name the queue length."""
        super().__init__("request", f"the server is busy ({pending} requests pending)", 503)


RECENT = 1024  # requests whose queue / decode times ``GET /health`` summarizes


def _percentile_ms(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of seconds ``values``, in milliseconds (None: empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(1000.0 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


@dataclass
class EngineStats:
    """Counters and recent per-request times for ``GET /health``."""

    requests: int = 0
    batches: int = 0
    failed: int = 0
    largest_batch: int = 0
    decode_seconds: float = 0.0
    recent_queue: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    recent_decode: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))

    def record(self, queue_s: float, decode_s: float) -> None:
        """Remember one answered request's seconds in the queue and in its decode."""
        self.recent_queue.append(queue_s)
        self.recent_decode.append(decode_s)

    def as_dict(self) -> dict[str, Any]:
        """The counters, and p50 / p99 of the last :data:`RECENT` requests' times, as JSON."""
        queue_s, decode_s = list(self.recent_queue), list(self.recent_decode)
        return {
            "requests": self.requests,
            "batches": self.batches,
            "failed": self.failed,
            "largest_batch": self.largest_batch,
            "decode_seconds": round(self.decode_seconds, 3),
            "queue_ms_p50": _percentile_ms(queue_s, 0.50),
            "queue_ms_p99": _percentile_ms(queue_s, 0.99),
            "decode_ms_p50": _percentile_ms(decode_s, 0.50),
            "decode_ms_p99": _percentile_ms(decode_s, 0.99),
        }


@dataclass
class _Job:
    request: RecommendRequest
    timing: dict[str, float] | None = None
    queued: float = field(default_factory=time.perf_counter)
    future: Future[dict[str, Any]] = field(default_factory=Future)


_STOP = object()


def _resolve(
    future: Future[dict[str, Any]],
    result: dict[str, Any] | None = None,
    exception: BaseException | None = None,
) -> None:
    """Set a job's outcome unless its client has gone (a cancelled future)."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result if result is not None else {})
    except InvalidStateError:
        pass


class TransformersEngine:
    """Micro-batched :func:`igdbeam.generate` on one worker thread (see the module docstring).

    Args:
        model: a transformers causal LM (eval mode).
        catalog: the service's :class:`~igdbeam.serving.catalog.ServingCatalog`.
        num_beams: beams per request (at least the request's ``k``).
        length_penalty: as :func:`igdbeam.generate` (0: D3-style).
        max_batch: most requests decoded together.
        max_wait_ms: how long the worker waits for more requests after the first one.
        max_pending: queued requests beyond which new ones get 503.
    """

    name = "transformers"

    def __init__(
        self,
        model: Any,
        catalog: ServingCatalog,
        *,
        num_beams: int = 10,
        length_penalty: float = 0.0,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        max_pending: int = 4096,
    ) -> None:
        """Start the worker thread."""
        self.model, self.catalog = model, catalog
        self.num_beams, self.length_penalty = int(num_beams), float(length_penalty)
        self.max_batch, self.max_wait = max(1, int(max_batch)), max(0.0, max_wait_ms) / 1000.0
        self.max_pending = int(max_pending)
        self.stats = EngineStats()
        self.pad_token_id = int(
            catalog.tokenizer.pad_token_id
            if catalog.tokenizer.pad_token_id is not None
            else catalog.tokenizer.eos_token_id
        )
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="igdbeam-decoder", daemon=True)
        self._thread.start()

    async def recommend(
        self, request: RecommendRequest, timing: dict[str, float] | None = None
    ) -> dict[str, Any]:
        """Queue the request and wait for its answer (``timing``: see the module docstring)."""
        pending = self._queue.qsize()
        if pending >= self.max_pending:
            raise OverloadedError(pending)
        job = _Job(request, timing)
        self._queue.put(job)
        return await asyncio.wrap_future(job.future)

    def close(self) -> None:
        """Stop the worker after the queued requests (waits for it)."""
        self._queue.put(_STOP)
        self._thread.join()

    # ------------------------------------------------------------------ worker thread
    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, stop = [first], False
        deadline = time.monotonic() + self.max_wait
        while len(jobs) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            jobs.append(item)
        return jobs, stop

    def _work(self) -> None:
        import torch

        torch.set_grad_enabled(False)
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            jobs, stop = self._collect(item)
            groups: dict[tuple[int, float], list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.request.batch_key(self.num_beams), []).append(job)
            for (beams, alpha), group in groups.items():
                self._decode(group, beams, alpha)
            if stop:
                return

    def _decode(self, jobs: Sequence[_Job], beams: int, alpha: float) -> None:
        """Decode one group and resolve its futures (with the error if the decode fails)."""
        t0 = time.perf_counter()
        try:
            answers = self.decode([j.request for j in jobs], beams, alpha)
        except Exception as exc:  # one bad batch must not stop the worker
            self.stats.failed += len(jobs)
            for job in jobs:
                _resolve(job.future, exception=exc)
            return
        decode_s = time.perf_counter() - t0
        self.stats.requests += len(jobs)
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
        self.stats.decode_seconds += decode_s
        for job, answer in zip(jobs, answers, strict=True):
            self.stats.record(t0 - job.queued, decode_s)
            if job.timing is not None:
                job.timing.update(queue=t0 - job.queued, decode=decode_s, batch=len(jobs))
            _resolve(job.future, answer)

    def decode(
        self, requests: Sequence[RecommendRequest], beams: int, alpha: float
    ) -> list[dict[str, Any]]:
        """Decode requests of one ``(beams, alpha)`` group as one batch (worker thread)."""
        import torch

        from igdbeam.decoding.generate import generate
        from igdbeam.decoding.inputs import left_pad

        cat = self.catalog
        prompts = [cat.prompt_ids(r.history) for r in requests]
        rows = [cat.mask_row(r) for r in requests]
        item_mask = None
        if any(row is not None for row in rows):
            full = np.ones(cat.num_items, dtype=bool)
            item_mask = torch.from_numpy(np.stack([full if r is None else r for r in rows]))
        device = next(self.model.parameters()).device
        ids, mask = left_pad(prompts, self.pad_token_id)
        out = generate(
            self.model,
            ids.to(device),
            mask.to(device),
            trie=cat.trie,
            num_beams=beams,
            alpha=alpha,
            length_penalty=self.length_penalty,
            item_mask=None if item_mask is None else item_mask.to(device),
            pad_token_id=self.pad_token_id,
        )
        item_ids = out.item_ids.cpu().tolist()
        scores = out.scores.float().cpu().tolist()
        return [cat.answer(i, s, r.k) for i, s, r in zip(item_ids, scores, requests, strict=True)]

    def describe(self) -> dict[str, Any]:
        """Settings and counters for ``GET /health``."""
        return {
            "engine": self.name,
            "num_beams": self.num_beams,
            "max_batch": self.max_batch,
            "max_wait_ms": self.max_wait * 1000.0,
            "pending": self._queue.qsize(),
            **self.stats.as_dict(),
        }


class VLLMEngine:
    """:func:`igdbeam.vllm.agenerate` per request on a vLLM ``AsyncLLM``.

    Args:
        engine: a started ``vllm.v1.engine.async_llm.AsyncLLM`` (raw log-probs, prefix caching).
        catalog: the service's :class:`~igdbeam.serving.catalog.ServingCatalog`.
        num_beams: beams per request (at least the request's ``k``).
        length_penalty: as :func:`igdbeam.generate`.
        max_pending: requests in flight beyond which new ones get 503.
    """

    name = "vllm"

    def __init__(
        self,
        engine: Any,
        catalog: ServingCatalog,
        *,
        num_beams: int = 10,
        length_penalty: float = 0.0,
        max_pending: int = 4096,
    ) -> None:
        """Build the compact trie once."""
        from igdbeam.vllm import compact_trie

        self.engine, self.catalog = engine, catalog
        self.num_beams, self.length_penalty = int(num_beams), float(length_penalty)
        self.max_pending = int(max_pending)
        self.compact = compact_trie(catalog.trie)
        self.stats = EngineStats()
        self._in_flight = 0
        self.pad_token_id = int(catalog.tokenizer.pad_token_id or 0)

    async def recommend(
        self, request: RecommendRequest, timing: dict[str, float] | None = None
    ) -> dict[str, Any]:
        """Decode one request (concurrent calls share the engine's batches).

        ``timing`` gets ``queue`` 0 (the engine schedules every request at once), ``decode``
        (the request's whole beam search, shared forwards included) and ``batch`` 1.
        """
        from igdbeam.vllm import agenerate

        if self._in_flight >= self.max_pending:
            raise OverloadedError(self._in_flight)
        self._in_flight += 1
        t0 = time.perf_counter()
        try:
            cat = self.catalog
            row = cat.mask_row(request)
            out = await agenerate(
                self.engine,
                [cat.prompt_ids(request.history)],
                trie=self.compact,
                num_beams=max(self.num_beams, request.k),
                alpha=request.alpha,
                length_penalty=self.length_penalty,
                item_mask=None if row is None else row[None, :],
                pad_token_id=self.pad_token_id,
            )
        except Exception:
            self.stats.failed += 1
            raise
        finally:
            self._in_flight -= 1
        decode_s = time.perf_counter() - t0
        self.stats.requests += 1
        self.stats.decode_seconds += decode_s
        self.stats.record(0.0, decode_s)
        if timing is not None:
            timing.update(queue=0.0, decode=decode_s, batch=1)
        return self.catalog.answer(
            out.item_ids[0].tolist(), out.scores[0].float().tolist(), request.k
        )

    def close(self) -> None:
        """Shut the vLLM engine down."""
        shutdown = getattr(self.engine, "shutdown", None)
        if shutdown is not None:
            shutdown()

    def describe(self) -> dict[str, Any]:
        """Settings and counters for ``GET /health``."""
        return {
            "engine": self.name,
            "num_beams": self.num_beams,
            "in_flight": self._in_flight,
            **self.stats.as_dict(),
        }
