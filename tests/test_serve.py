"""``igdbeam serve`` on the transformers engine: answers equal igdbeam.generate, concurrent
requests are micro-batched and keep their own results, bad requests get a 4xx JSON error naming
the field, a failed decode fails only its own requests, and the app runs on a real uvicorn.

A tiny random Llama over the tiny tokenizer and the ten-title BIGRec folder (``tiny_assets``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import igdbeam  # noqa: E402
from igdbeam.app.service import build_engine  # noqa: E402
from igdbeam.serving.app import create_app  # noqa: E402

TITLE_IDS = {100 + k: k for k in range(10)}  # info.txt id -> catalog position


@pytest.fixture(scope="module")
def engine(tiny_assets: tuple[Path, Path]) -> Any:
    data, model = tiny_assets
    eng = build_engine(data, str(model), engine="transformers", max_batch=8, max_wait_ms=20.0)
    yield eng
    eng.close()


def _reference(
    engine: Any, history: list[int], k: int, alpha: float, allowed=None, exclude: bool = True
) -> list[tuple[int, float]]:
    """igdbeam.generate on the one prompt, mapped to (info.txt id, score)."""
    cat = engine.catalog
    positions = [TITLE_IDS[h] for h in history]
    ids = torch.tensor([cat.prompt_ids(positions)])
    mask = None
    if exclude or allowed is not None:
        row = torch.zeros(cat.num_items, dtype=torch.bool)
        row[[TITLE_IDS[a] for a in allowed] if allowed is not None else slice(None)] = True
        if exclude:
            row[positions] = False
        mask = row.unsqueeze(0)
    out = igdbeam.generate(
        engine.model,
        ids,
        trie=cat.trie,
        num_beams=max(10, k),
        alpha=alpha,
        item_mask=mask,
        pad_token_id=engine.pad_token_id,
    )
    pairs = [
        (int(cat.catalog.ids[i]), float(s))
        for i, s in zip(out.item_ids[0].tolist(), out.scores[0].tolist(), strict=True)
        if i >= 0
    ]
    return pairs[:k]


def _pairs(answer: dict) -> list[tuple[int, float]]:
    return [(item["id"], item["score"]) for item in answer["items"]]


def _assert_same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    assert got == pytest.approx(want, abs=1e-4)


async def _post_all(app: Any, bodies: list[Any]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://igdbeam.test") as client:
        return await asyncio.gather(
            *(
                client.post(
                    "/v1/recommend", content=b if isinstance(b, bytes) else json.dumps(b).encode()
                )
                for b in bodies
            )
        )


REQUESTS = [
    {"history": [100, 101, 102]},
    {"history": [105], "k": 3, "alpha": 0.0},
    {"history": ["Toy Story (1995)", 104], "k": 5, "alpha": 0.5},
    {"history": [103, 107], "exclude_history": False, "k": 4},
    {"history": [101], "item_mask": [102, 103, 104, 101], "k": 10},
    {"history": [108, 109], "item_mask": [108], "k": 2},  # only the history is allowed: empty
]


def test_answers_equal_generate_and_concurrent_requests_are_batched(engine: Any) -> None:
    app = create_app(engine, default_alpha=0.2, close_engine=False)
    bodies = REQUESTS * 4
    before = engine.stats.batches
    responses = asyncio.run(_post_all(app, bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies)
    assert engine.stats.largest_batch > 1
    assert engine.stats.batches - before < len(bodies)
    for body, resp in zip(bodies, responses, strict=True):
        history = [h if isinstance(h, int) else 100 for h in body["history"]]
        want = _reference(
            engine,
            history,
            body.get("k", 10),
            body.get("alpha", 0.2),
            body.get("item_mask"),
            body.get("exclude_history", True),
        )
        answer = resp.json()
        _assert_same(_pairs(answer), want)
        titles = engine.catalog.catalog.titles
        assert all(item["title"] == titles[TITLE_IDS[item["id"]]] for item in answer["items"])
        if body.get("exclude_history", True):
            assert not set(history) & {item["id"] for item in answer["items"]}
    assert responses[5].json() == {"items": []}
    # Every answer says where its time went: queue + decode lie inside the handler's time, and
    # the batch sizes are those the engine decoded.
    timings = [_server_timing(r.headers["server-timing"]) for r in responses]
    for t in timings:
        assert set(t) == {"queue", "decode", "batch", "app"}
        assert t["queue"] >= 0 and t["decode"] > 0
        assert t["queue"] + t["decode"] <= t["app"] + 0.01
    batches = [int(t["batch"]) for t in timings]
    assert max(batches) > 1 and max(batches) <= engine.stats.largest_batch


def _server_timing(header: str) -> dict[str, float]:
    """``queue;dur=1.5, batch;desc="3"`` -> ``{"queue": 1.5, "batch": 3.0}``."""
    out = {}
    for metric in header.split(","):
        name, *params = [p.strip() for p in metric.split(";")]
        for param in params:
            key, value = param.split("=", 1)
            out[name] = float(value.strip('"'))
    return out


BAD = [
    (b"{not json", "body", 400),
    (b"[1, 2]", "body", 400),
    ({"k": 3}, "history", 400),
    ({"history": "Toy Story (1995)"}, "history", 400),
    ({"history": []}, "history", 400),
    ({"history": [100, 999]}, "history[1]", 400),
    ({"history": [100, "No Such Film"]}, "history[1]", 400),
    ({"history": [True]}, "history[0]", 400),
    ({"history": [100.0]}, "history[0]", 400),
    ({"history": [100], "k": 0}, "k", 400),
    ({"history": [100], "k": "3"}, "k", 400),
    ({"history": [100], "k": 101}, "k", 400),
    ({"history": [100], "alpha": 1.5}, "alpha", 400),
    ({"history": [100], "alpha": "high"}, "alpha", 400),
    (b'{"history": [100], "alpha": NaN}', "alpha", 400),
    ({"history": [100], "exclude_history": "yes"}, "exclude_history", 400),
    ({"history": [100], "item_mask": 101}, "item_mask", 400),
    ({"history": [100], "item_mask": [101, -5]}, "item_mask[1]", 400),
    ({"history": [100], "top_k": 3}, "top_k", 400),
    (json.dumps({"history": [100] * 300_000}).encode(), "body", 413),
]


def test_bad_requests_get_4xx_json_naming_the_field(engine: Any) -> None:
    app = create_app(engine, close_engine=False, max_body_bytes=1 << 20)
    good = {"history": [100, 101], "k": 3}
    bodies = [b for b, _, _ in BAD] + [good]
    responses = asyncio.run(_post_all(app, bodies))
    for (body, field, status), resp in zip(BAD, responses, strict=False):
        assert resp.status_code == status, (body, resp.text)
        assert resp.json()["error"]["field"] == field, (body, resp.json())
    assert responses[-1].status_code == 200
    _assert_same(_pairs(responses[-1].json()), _reference(engine, [100, 101], 3, 0.0))


def test_routes_methods_and_health(engine: Any) -> None:
    app = create_app(engine, close_engine=False)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            answered = await c.post("/v1/recommend", json={"history": [100]})
            assert answered.status_code == 200
            return [await c.get("/health"), await c.get("/v1/recommend"), await c.get("/nope")]

    health, wrong_method, missing = asyncio.run(run())
    assert health.status_code == 200
    h = health.json()
    assert h["status"] == "ok" and h["engine"] == "transformers" and h["items"] == 10
    assert h["requests"] >= 1
    assert 0 <= h["queue_ms_p50"] <= h["queue_ms_p99"]
    assert 0 < h["decode_ms_p50"] <= h["decode_ms_p99"]
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["field"] == "path"
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "path"


def test_a_failing_decode_fails_only_its_batch(engine: Any, monkeypatch) -> None:
    real = engine.decode

    def flaky(requests, beams, alpha):  # alpha 0.9 batches fail, the others decode
        if alpha == 0.9:
            raise RuntimeError("injected failure")
        return real(requests, beams, alpha)

    monkeypatch.setattr(engine, "decode", flaky)
    app = create_app(engine, close_engine=False)
    bodies = [{"history": [100], "alpha": 0.9}, {"history": [100], "k": 2, "alpha": 0.1}] * 3
    responses = asyncio.run(_post_all(app, bodies))
    assert [r.status_code for r in responses] == [500, 200] * 3
    assert "injected failure" in responses[0].json()["error"]["message"]
    for r in responses[1::2]:
        _assert_same(_pairs(r.json()), _reference(engine, [100], 2, 0.1))
    monkeypatch.setattr(engine, "decode", real)
    responses = asyncio.run(_post_all(app, [{"history": [100], "alpha": 0.9}]))
    assert responses[0].status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_uvicorn_server_on_loopback(engine: Any) -> None:
    import uvicorn

    app = create_app(engine, close_engine=False, default_alpha=0.2)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            assert client.get("/health").json()["status"] == "ok"
            resp = client.post("/v1/recommend", json={"history": [102, 103], "k": 4})
            assert resp.status_code == 200
            _assert_same(_pairs(resp.json()), _reference(engine, [102, 103], 4, 0.2))
            bad = client.post("/v1/recommend", content=b"\xff\xfe")
            assert bad.status_code == 400 and bad.json()["error"]["field"] == "body"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive()
