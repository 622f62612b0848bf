"""bfloat16 vs float32 on this machine: a decode batch, a training step, and how often the top-10
lists agree (``--dtype auto`` picks bfloat16 where the CPU has AVX512-BF16 / AMX-BF16).

Run: ``python -m pytest benchmarks/bench_precision.py -q -s`` (``IGDBEAM_BENCH_QUICK=1``: a tiny
random model, seconds, for CI). With the real assets installed it uses SmolLM2-135M-Instruct and
MovieLens-100k:

* decode: ``recommend_many`` of 16 test rows (5 history items, ~190-token prompts), 10 beams,
  D3 + IGD (alpha 0.1, length penalty 0), the ``train-targets`` trie;
* train: one optimizer step of a LoRA r=8 fine-tune (8 training rows, IGD loss), as
  ``igdbeam experiment --profile cpu-large`` trains: a bfloat16 base with float32 adapters vs
  float32 throughout.

Role ``igdbeam`` is bfloat16 and ``float32`` the baseline, so a ratio above 1 is bfloat16's
speed-up. The decode groups also report the share of rows whose top-10 lists are identical, the
share with the same set of 10 items, and the mean overlap of the two lists.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from benchmarks.conftest import QUICK
from factories.models import has_smollm2

DTYPES = {"float32": torch.float32, "igdbeam": torch.bfloat16}
ROWS = 4 if QUICK else 16
BEAMS = 4 if QUICK else 10
REAL = not QUICK and has_smollm2()
DECODED: dict[str, torch.Tensor] = {}


def _real_setup() -> dict[str, Any]:
    from igdbeam.app.assets import load_model_and_tokenizer
    from igdbeam.app.pipeline import build_trie, prepare_movielens, select_test_rows
    from igdbeam.data import load_dataset

    ds = load_dataset(prepare_movielens("ml-100k", progress=False), splits=("train", "test"))
    _, tok = load_model_and_tokenizer("smollm2")
    trie = build_trie(ds, tok, "igd", catalog="train-targets")
    return {
        "load": lambda dtype: load_model_and_tokenizer("smollm2", dtype=dtype)[0],
        "tokenizer": tok,
        "trie": trie,
        "test": select_test_rows(ds.split("test"), ROWS, seed=0),
        "train": ds.split("train")[-8:],
    }


def _tiny_setup() -> dict[str, Any]:
    import tempfile
    from pathlib import Path

    from factories.data import write_tiny_data
    from factories.models import write_tiny_model
    from igdbeam.app.assets import load_model_and_tokenizer
    from igdbeam.app.pipeline import build_trie
    from igdbeam.data import load_dataset

    root = Path(tempfile.mkdtemp(prefix="igdbeam-bench-precision-"))
    model_dir, data = write_tiny_model(root / "model"), write_tiny_data(root / "data")
    ds = load_dataset(data, splits=("train", "test"))
    _, tok = load_model_and_tokenizer(str(model_dir))
    return {
        "load": lambda dtype: load_model_and_tokenizer(str(model_dir), dtype=dtype)[0],
        "tokenizer": tok,
        "trie": build_trie(ds, tok, "igd"),
        "test": ds.split("test")[:ROWS],
        "train": ds.split("train")[:8],
    }


@pytest.fixture(scope="module")
def assets() -> dict[str, Any]:
    return _real_setup() if REAL else _tiny_setup()


@pytest.mark.parametrize("role", ["float32", "igdbeam"])
def test_decode_batch(benchmark, ratios, assets, role: str) -> None:
    from igdbeam.app.pipeline import recommend_many

    model = assets["load"](DTYPES[role])
    benchmark.group = (
        f"precision decode {ROWS} rows x {BEAMS} beams ({'SmolLM2' if REAL else 'tiny'})"
    )

    def run() -> Any:
        return recommend_many(
            model,
            assets["tokenizer"],
            assets["trie"],
            assets["test"],
            {"igd": {"alpha": 0.1, "length_penalty": 0.0}},
            num_beams=BEAMS,
            batch_size=ROWS,
            max_history_items=5,
            progress=False,
        )["igd"]

    recs = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=1)
    ratios.record(benchmark.group, role, benchmark)
    DECODED[role] = torch.as_tensor(recs.item_ids)
    assert DECODED[role].shape == (ROWS, BEAMS) and bool((DECODED[role] >= 0).all())
    if len(DECODED) == 2:
        a, b = DECODED["float32"], DECODED["igdbeam"]
        same_set = [set(x.tolist()) == set(y.tolist()) for x, y in zip(a, b, strict=True)]
        overlap = [
            len(set(x.tolist()) & set(y.tolist())) / BEAMS for x, y in zip(a, b, strict=True)
        ]
        ratios.note(
            benchmark.group,
            identical_lists=float((a == b).all(dim=1).float().mean()),
            same_item_sets=sum(same_set) / ROWS,
            mean_overlap=sum(overlap) / ROWS,
        )


@pytest.mark.parametrize("role", ["float32", "igdbeam"])
def test_training_step(benchmark, ratios, assets, role: str) -> None:
    import peft

    from igdbeam.app.pipeline.finetune import ExampleDataset
    from igdbeam.training.collators import CompletionCollator
    from igdbeam.training.lora import lora_config
    from igdbeam.training.loss import igd_loss

    tok, trie = assets["tokenizer"], assets["trie"]
    torch.manual_seed(0)
    model = peft.get_peft_model(assets["load"](DTYPES[role]), lora_config(8, 16.0, 0.0))
    model.train()
    data = ExampleDataset(tok, assets["train"], max_history_items=5, progress=False)
    batch = CompletionCollator(tok.pad_token_id)([data[i] for i in range(len(data))])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    benchmark.group = (
        f"precision train step LoRA r=8, {len(data)} rows ({'SmolLM2' if REAL else 'tiny'})"
    )
    losses: list[float] = []

    def step() -> None:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = igd_loss(out.logits, batch["labels"], trie, beta=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))

    t0 = time.perf_counter()
    benchmark.pedantic(step, rounds=1 if QUICK else 3, iterations=1, warmup_rounds=1)
    assert all(torch.isfinite(torch.tensor(losses)))
    ratios.record(benchmark.group, role, benchmark, first_loss=losses[0])
    assert time.perf_counter() - t0 > 0
