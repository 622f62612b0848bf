"""Load test of ``igdbeam serve`` on loopback: throughput, latency, losses, correctness.

Run::

    python benchmarks/bench_serve.py --clients 32 --requests 200      # tiny random model
    python benchmarks/bench_serve.py --model smollm2 --data DIR --clients 8 --requests 4

A real uvicorn server (the transformers engine, micro-batching) listens on a free 127.0.0.1
port; ``--clients`` concurrent keep-alive clients each send ``--requests`` requests drawn from a
pool of ``--distinct`` request bodies (random histories of 1-5 items as ids or titles, k, alpha,
history exclusion, an allowed-item list), one at a time per client. Reported: requests per
second, p50 / p99 / max latency, requests lost (no answer), 4xx and 5xx answers, the mean batch
size, and whether **every** answer equals ``igdbeam.generate`` on its own history (same items,
scores within 1e-4). Bounded: the run stops after all requests or ``--timeout`` seconds; only
loopback is contacted. Under pytest a quick size runs (``IGDBEAM_BENCH_QUICK=1``: 8 clients x 8
requests) and asserts 0 lost, 0 5xx and equality.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request_pool(catalog: Any, distinct: int, seed: int = 0) -> list[dict[str, Any]]:
    """``distinct`` request bodies over ``catalog`` (a ServingCatalog)."""
    rng = random.Random(seed)
    ids, titles = catalog.catalog.ids, catalog.catalog.titles
    n = len(ids)
    pool = []
    for _ in range(distinct):
        picks = rng.sample(range(n), rng.randint(1, min(5, n)))
        history: list[Any] = [titles[p] if rng.random() < 0.3 else int(ids[p]) for p in picks]
        body: dict[str, Any] = {"history": history, "k": rng.choice([1, 5, 10])}
        if rng.random() < 0.7:
            body["alpha"] = rng.choice([0.0, 0.2])
        if rng.random() < 0.3:
            body["exclude_history"] = False
        if rng.random() < 0.2:
            body["item_mask"] = [int(ids[p]) for p in rng.sample(range(n), max(1, n // 2))]
        pool.append(body)
    return pool


def reference_answer(engine: Any, body: dict[str, Any], default_alpha: float) -> list[Any]:
    """igdbeam.generate on this body's history alone, as ``[(id, score), ...]``."""
    import torch

    import igdbeam

    cat = engine.catalog
    hist = [cat.resolve(h, "history") for h in body["history"]]
    k = body.get("k", 10)
    exclude = body.get("exclude_history", True)
    allowed = body.get("item_mask")
    mask = None
    if exclude or allowed is not None:
        row = torch.zeros(cat.num_items, dtype=torch.bool)
        if allowed is None:
            row[:] = True
        else:
            row[[cat.resolve(a, "item_mask") for a in allowed]] = True
        if exclude:
            row[hist] = False
        mask = row.unsqueeze(0)
    out = igdbeam.generate(
        engine.model,
        torch.tensor([cat.prompt_ids(hist)]),
        trie=cat.trie,
        num_beams=max(engine.num_beams, k),
        alpha=body.get("alpha", default_alpha),
        length_penalty=engine.length_penalty,
        item_mask=mask,
        pad_token_id=engine.pad_token_id,
    )
    pairs = [
        (int(cat.catalog.ids[i]), float(s))
        for i, s in zip(out.item_ids[0].tolist(), out.scores[0].tolist(), strict=True)
        if i >= 0
    ]
    return pairs[:k]


def parse_server_timing(header: str) -> dict[str, float]:
    """``queue;dur=1.5, batch;desc="3"`` -> ``{"queue": 1.5, "batch": 3.0}`` (milliseconds)."""
    out: dict[str, float] = {}
    for metric in header.split(","):
        name, *params = [p.strip() for p in metric.split(";")]
        for param in params:
            key, _, value = param.partition("=")
            if key in ("dur", "desc"):
                out[name] = float(value.strip('"'))
    return out


def nearest_rank_index(n: int, q: float) -> int:
    """The index of the ``q`` quantile among ``n`` sorted values, by nearest rank."""
    return min(n - 1, int(q * n))


def nearest_rank(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted ``ordered`` by nearest rank (NaN when empty)."""
    return ordered[nearest_rank_index(len(ordered), q)] if ordered else float("nan")


def latency_breakdown(results: list[Any]) -> dict[str, Any]:
    """Where answered requests' time went, from their ``Server-Timing`` headers.

    Per request: ``queue`` (waiting for the decoder thread), ``decode`` (its batch's beam
    search), ``server_other`` (the handler's time outside the engine: parsing, answer) and
    ``outside`` (client-observed latency minus the handler's time: HTTP, the event loops, and
    waiting for a CPU). Reported as p50 / p99 of each, and their means over the slowest 1% of
    requests (the tail), so that the tail is attributed to a component.
    """
    rows = []
    for _, status, _, took, t in results:
        if status != 200 or "app" not in t:
            continue
        total = 1000.0 * took
        rows.append(
            {
                "total": total,
                "queue": t.get("queue", 0.0),
                "decode": t.get("decode", 0.0),
                "server_other": t["app"] - t.get("queue", 0.0) - t.get("decode", 0.0),
                "outside": total - t["app"],
                "batch": t.get("batch", 1.0),
            }
        )
    if not rows:
        return {}
    rows.sort(key=lambda r: r["total"])
    tail = rows[nearest_rank_index(len(rows), 0.99) :]

    def pct(key: str, q: float) -> float:
        return nearest_rank(sorted(r[key] for r in rows), q)

    parts = ("queue", "decode", "server_other", "outside")
    return {
        "timed_requests": len(rows),
        "outside_ms_min": min(r["outside"] for r in rows),
        **{f"{k}_ms_p50": pct(k, 0.50) for k in parts},
        **{f"{k}_ms_p99": pct(k, 0.99) for k in parts},
        "tail_requests": len(tail),
        **{f"tail_mean_{k}_ms": statistics.mean(r[k] for r in tail) for k in (*parts, "total")},
        "tail_mean_batch": statistics.mean(r["batch"] for r in tail),
    }


async def _client(
    base: str, bodies: list[dict[str, Any]], order: list[int], out: list[Any], deadline: float
) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=120.0) as client:
        for idx in order:
            if time.monotonic() > deadline:
                out.append((idx, None, None, 0.0, {}))
                continue
            t0 = time.perf_counter()
            try:
                resp = await client.post("/v1/recommend", json=bodies[idx])
                took = time.perf_counter() - t0
                timing = parse_server_timing(resp.headers.get("server-timing", ""))
                out.append((idx, resp.status_code, resp.json(), took, timing))
            except Exception:  # a lost request: counted, never retried
                out.append((idx, None, None, time.perf_counter() - t0, {}))


def run_load(
    engine: Any,
    *,
    clients: int,
    requests: int,
    distinct: int,
    default_alpha: float = 0.2,
    timeout: float = 600.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Serve ``engine`` on loopback, run the clients, check every answer; return the figures."""
    import uvicorn

    from igdbeam.serving.app import create_app

    app = create_app(engine, default_alpha=default_alpha, close_engine=False)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    bodies = request_pool(engine.catalog, distinct, seed)
    rng = random.Random(seed + 1)
    orders = [[rng.randrange(distinct) for _ in range(requests)] for _ in range(clients)]
    results: list[Any] = []
    batches0, requests0 = engine.stats.batches, engine.stats.requests
    try:
        start = time.monotonic()
        while not server.started:
            if time.monotonic() - start > 60:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        deadline = time.monotonic() + timeout

        async def all_clients() -> None:
            base = f"http://127.0.0.1:{port}"
            await asyncio.gather(*(_client(base, bodies, o, results, deadline) for o in orders))

        t0 = time.perf_counter()
        asyncio.run(all_clients())
        wall = time.perf_counter() - t0
    finally:
        server.should_exit = True
        thread.join(timeout=30)

    refs: dict[int, list[Any]] = {}
    mismatched = 0
    for idx, status, body, _, _ in results:
        if status != 200:
            continue
        if idx not in refs:
            refs[idx] = reference_answer(engine, bodies[idx], default_alpha)
        got = [(it["id"], it["score"]) for it in body["items"]]
        want = refs[idx]
        if [i for i, _ in got] != [i for i, _ in want] or any(
            abs(a - b) > 1e-4 for (_, a), (_, b) in zip(got, want, strict=True)
        ):
            mismatched += 1
    ok = [r for r in results if r[1] == 200]
    lat = sorted(r[3] for r in ok)
    n_batches = engine.stats.batches - batches0
    served = engine.stats.requests - requests0

    def pct(q: float) -> float:
        return nearest_rank(lat, q)

    return {
        "clients": clients,
        "requests_per_client": requests,
        "sent": clients * requests,
        "answered_200": len(ok),
        "lost": sum(1 for r in results if r[1] is None) + (clients * requests - len(results)),
        "4xx": sum(1 for r in results if r[1] is not None and 400 <= r[1] < 500),
        "5xx": sum(1 for r in results if r[1] is not None and r[1] >= 500),
        "mismatched": mismatched,
        "checked_distinct_bodies": len(refs),
        "wall_s": wall,
        "throughput_rps": len(ok) / wall if wall else float("nan"),
        "p50_ms": 1000 * pct(0.50),
        "p99_ms": 1000 * pct(0.99),
        "max_ms": 1000 * (lat[-1] if lat else float("nan")),
        "mean_ms": 1000 * (statistics.mean(lat) if lat else float("nan")),
        "mean_batch": served / n_batches if n_batches else float("nan"),
        "largest_batch": engine.stats.largest_batch,
        **latency_breakdown(results),
    }


def _tiny_engine(folder: Path, max_batch: int, max_wait_ms: float) -> Any:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from factories.data import write_tiny_data
    from factories.models import write_tiny_model
    from igdbeam.app.service import build_engine

    data = write_tiny_data(folder / "data", users=12)
    model = write_tiny_model(folder / "model")
    return build_engine(
        data, str(model), engine="transformers", max_batch=max_batch, max_wait_ms=max_wait_ms
    )


def main() -> None:
    """Run the load test and print its figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=None, help="BIGRec folder (default: tiny data)")
    p.add_argument("--model", default=None, help="model folder or smollm2 (default: tiny)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=200, help="per client")
    p.add_argument("--distinct", type=int, default=64, help="distinct request bodies")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            engine = _tiny_engine(Path(tmp), args.max_batch, args.max_wait_ms)
            what = "tiny random Llama (2 layers, hidden 32), 10-item catalog"
        else:
            from igdbeam.app.service import build_engine

            if args.data is None:
                raise SystemExit("--model needs --data")
            engine = build_engine(
                args.data,
                args.model,
                engine="transformers",
                max_batch=args.max_batch,
                max_wait_ms=args.max_wait_ms,
            )
            what = f"{args.model} on {args.data} ({engine.catalog.num_items} items)"
        try:
            figures = run_load(
                engine,
                clients=args.clients,
                requests=args.requests,
                distinct=args.distinct,
                timeout=args.timeout,
            )
        finally:
            engine.close()
    figures["model"] = what
    figures["torch_threads"] = torch.get_num_threads()
    for key, value in figures.items():
        print(f"{key:>24}: {value:.4g}" if isinstance(value, float) else f"{key:>24}: {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def test_serve_load_quick(tmp_path: Path) -> None:
    """CI size: 8 clients x 8 requests on the tiny model; 0 lost, 0 5xx, all equal."""
    import pytest

    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    pytest.importorskip("httpx")
    engine = _tiny_engine(tmp_path, 16, 5.0)
    try:
        figures = run_load(engine, clients=8, requests=8, distinct=16, timeout=300)
    finally:
        engine.close()
    print(figures)
    assert figures["answered_200"] == 64
    assert figures["lost"] == 0 and figures["5xx"] == 0 and figures["4xx"] == 0
    assert figures["mismatched"] == 0
    assert figures["largest_batch"] > 1
    # Every answer carried its Server-Timing, and the server's time for a request never
    # exceeds what its client observed.
    assert figures["timed_requests"] == 64 and figures["tail_requests"] >= 1
    assert figures["outside_ms_min"] >= 0.0
    assert figures["queue_ms_p50"] >= 0.0 and figures["decode_ms_p50"] > 0.0


if __name__ == "__main__":
    main()
