"""``igdbeam serve --engine vllm``: the HTTP app on an AsyncLLM (SmolLM2, float32, ML-100k)
answers concurrent requests with igdbeam.generate's items for each history alone.

Runs in the vLLM environment only; about a minute on 2 idle cores.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

pytest.importorskip("vllm.entrypoints.llm")
pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

import torch  # noqa: E402
from vllm_testing import compare, engine_kwargs  # noqa: E402

import igdbeam  # noqa: E402

pytestmark = [
    pytest.mark.assets,
    pytest.mark.slow,
    # vLLM's engine client leaves a zmq context to the garbage collector at shutdown.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def test_vllm_service_answers_equal_generate() -> None:
    from transformers import AutoModelForCausalLM

    from igdbeam.app.pipeline import prepare_movielens
    from igdbeam.app.service import build_engine, model_folder
    from igdbeam.serving.app import create_app

    data = prepare_movielens("ml-100k", progress=False)
    kwargs = engine_kwargs()
    dtype = kwargs.pop("dtype")
    bodies = [
        {"history": [1, 2, 3], "k": 10},
        {"history": [50, 181], "k": 5, "alpha": 0.0},
        {"history": [100, 258, 286], "k": 10, "exclude_history": False},
        {"history": [7, 8], "k": 3, "item_mask": list(range(1, 200))},
    ]

    async def run() -> tuple[list[Any], Any]:
        engine = build_engine(data, "smollm2", engine="vllm", dtype=dtype, vllm_kwargs=kwargs)
        app = create_app(engine, default_alpha=0.2, close_engine=False)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                # ML-100k's info.txt ids run from 0 to 1681: 999999 names no item.
                unknown = json.dumps({"history": [999999]})
                bad = await client.post("/v1/recommend", content=unknown)
                assert bad.status_code == 400 and bad.json()["error"]["field"] == "history[0]"
                responses = await asyncio.gather(
                    *(client.post("/v1/recommend", content=json.dumps(b)) for b in bodies)
                )
                health = (await client.get("/health")).json()
        finally:
            engine.close()
        assert health["engine"] == "vllm" and health["requests"] == len(bodies)
        return responses, engine

    responses, engine = asyncio.run(run())
    cat = engine.catalog
    model = AutoModelForCausalLM.from_pretrained(str(model_folder("smollm2")), dtype=torch.float32)
    for body, resp in zip(bodies, responses, strict=True):
        assert resp.status_code == 200, resp.text
        hist = [cat.resolve(h, "history") for h in body["history"]]
        row = torch.zeros(cat.num_items, dtype=torch.bool)
        allowed = body.get("item_mask")
        row[[cat.resolve(a, "m") for a in allowed] if allowed else slice(None)] = True
        if body.get("exclude_history", True):
            row[hist] = False
        ref = igdbeam.generate(
            model.eval(),
            torch.tensor([cat.prompt_ids(hist)]),
            trie=cat.trie,
            num_beams=10,
            alpha=body.get("alpha", 0.2),
            item_mask=row.unsqueeze(0),
            pad_token_id=engine.pad_token_id,
        )
        items = resp.json()["items"]
        k = body["k"]
        ours = igdbeam.RecommendationOutput(
            item_ids=torch.tensor([[cat.resolve(it["id"], "id") for it in items]]),
            scores=torch.tensor([[it["score"] for it in items]]),
            sequences=torch.zeros(1, len(items), 1, dtype=torch.int64),
            lengths=torch.zeros(1, len(items), dtype=torch.int64),
            nodes=torch.zeros(1, len(items), dtype=torch.int32),
        )
        agree = compare(ours, ref, top=k)
        assert agree.unexplained == [] and agree.max_score_diff < 1e-3, (body, items)
        assert all(it["title"] == cat.catalog.titles[cat.resolve(it["id"], "id")] for it in items)
