"""The demo end to end on tiny stand-ins: a tiny Llama, two random LoRA adapters, tiny data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from factories.data import write_tiny_data
from factories.models import write_tiny_model
from igdbeam.app.demo import DemoProfile, run_demo


def _write_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    import peft
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    cfg = peft.LoraConfig(
        r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"
    )
    peft.get_peft_model(base, cfg).save_pretrained(str(out))
    return out


@pytest.fixture
def tiny_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from igdbeam.app import assets, pipeline

    data = write_tiny_data(tmp_path / "data")
    model_dir = write_tiny_model(tmp_path / "model")

    def load(_name: str = "smollm2"):
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        tok.padding_side = "left"
        return AutoModelForCausalLM.from_pretrained(str(model_dir)).eval(), tok

    monkeypatch.setattr(pipeline, "prepare_movielens", lambda *a, **k: data)
    monkeypatch.setattr(assets, "smollm2_checkpoint", lambda **k: model_dir)
    monkeypatch.setattr(assets, "load_model_and_tokenizer", load)
    return {
        "root": tmp_path,
        "data": data,
        "plain": _write_adapter(model_dir, tmp_path / "plain", 1),
        "igd": _write_adapter(model_dir, tmp_path / "igd", 2),
    }


@pytest.mark.parametrize(("budget", "rows"), [(None, 6), (0.0, 2)])
def test_demo_trained_models_with_intervals(tiny_env, budget, rows, capsys) -> None:
    from igdbeam.evaluation.metrics import ranking_metrics

    prof = DemoProfile("t", num_users=6, num_beams=3, batch_size=2, time_budget_s=budget)
    out = tiny_env["root"] / "demo"
    adapters = {"plain": tiny_env["plain"], "igd": tiny_env["igd"]}
    summary = run_demo(out, prof, progress=False, adapters=adapters)
    printed = capsys.readouterr().out
    assert "zero-IG tokens" in printed and "NDCG@10 - D3 baseline" in printed
    assert ("test rows decoded within the" in printed) == (rows < 6)
    assert summary["num_rows"] == rows
    cells = {(r["loss"], r["decoding"]): r for r in summary["results"] if r["kind"] == "model"}
    assert set(cells) == {("plain", "d3"), ("plain", "igd"), ("igd", "d3"), ("igd", "igd")}
    baselines = {r["decoding"] for r in summary["results"] if r["kind"] == "baseline"}
    assert {"most-popular", "most-popular-unseen"} <= baselines
    # The header states the rows, users and history exclusion; the legend explains the columns.
    md = (out / "results.md").read_text()
    assert f"{rows} rows" in md or f"{rows} test rows" in md
    assert "history **excluded**" in md and "**coverage**" in md and "**mean pop.**" in md
    assert "vs_baseline" not in cells[("plain", "d3")]
    # Every printed value is recomputed independently from recommendations.csv.
    with open(out / "recommendations.csv") as f:
        recs = list(csv.DictReader(f))
    assert len(recs) == 2 * 2 * 3 * rows
    for (model, decoding), rec in cells.items():
        mine = [r for r in recs if r["model"] == model and r["decoding"] == decoding]
        users = list(dict.fromkeys(r["user_id"] for r in mine))  # one test row per user here
        ranked = np.array([[int(r["item_id"]) for r in mine if r["user_id"] == u] for u in users])
        target = np.array(
            [int(next(r["target_item_id"] for r in mine if r["user_id"] == u)) for u in users]
        )
        ref = ranking_metrics(ranked, target, ks=(10,))
        m = rec["metrics"]["NDCG@10"]
        assert m["value"] == pytest.approx(ref["NDCG@10"])
        assert m["low"] <= m["value"] <= m["high"]
        if "vs_baseline" in rec:
            d = rec["vs_baseline"]["NDCG@10"]
            base = cells[("plain", "d3")]["metrics"]["NDCG@10"]["value"]
            assert d["value"] == pytest.approx(m["value"] - base)
    # History exclusion: no recommended item was rated by the row's user before the target.
    from igdbeam.data import load_dataset
    from igdbeam.data.user_history import prior_item_ids

    ds = load_dataset(tiny_env["data"])
    test = {r.user_id: r for r in ds.split("test")}
    users = {r["user_id"] for r in recs}
    prior = dict(zip(users, prior_item_ids(ds, [test[u] for u in users]), strict=True))
    assert all(int(r["item_id"]) not in prior[r["user_id"]] for r in recs)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["num_rows"] == rows
    for name in (
        "results.csv",
        "results.md",
        "entropy_by_step.png",
        "zero_ig_by_step.png",
        "cells.png",
    ):
        assert (out / name).is_file()
