"""The demo's control flow on tiny stand-ins (the real run needs SmolLM2 and igdbeam.generate)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from igdbeam.demo import DemoProfile, run_demo
from pipeline_fixtures import write_tiny_data, write_tiny_model


@dataclass
class _Out:
    item_ids: torch.Tensor
    scores: torch.Tensor


def _fake_generate(model, input_ids, attention_mask, *, trie, num_beams, alpha, length_penalty):
    rows = input_ids.shape[0]
    # Deterministic: item k at rank k, except IGD which starts with the last item.
    items = torch.arange(num_beams).repeat(rows, 1) % trie.num_items
    if alpha > 0:
        items = items.flip(1)
    return _Out(items, -torch.arange(float(num_beams)).repeat(rows, 1))


@pytest.fixture
def tiny_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from igdbeam import assets, pipeline

    data = write_tiny_data(tmp_path / "data")
    model_dir = write_tiny_model(tmp_path / "model")

    def load(_name: str = "smollm2"):
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        tok.padding_side = "left"
        return AutoModelForCausalLM.from_pretrained(str(model_dir)).eval(), tok

    monkeypatch.setattr(pipeline, "prepare_movielens", lambda *a, **k: data)
    monkeypatch.setattr(assets, "smollm2_checkpoint", lambda **k: model_dir)
    monkeypatch.setattr(assets, "load_model_and_tokenizer", load)
    return tmp_path


@pytest.mark.parametrize(("budget", "users"), [(1e6, 6), (0.0, 2)])
def test_demo_flow(tiny_env: Path, budget: float, users: int, capsys) -> None:
    prof = DemoProfile("t", num_users=6, num_beams=3, batch_size=2, time_budget_s=budget)
    out = tiny_env / "demo"
    summary = run_demo(out, prof, threads=None, progress=False, generate_fn=_fake_generate)
    printed = capsys.readouterr().out
    assert "zero-IG tokens" in printed
    assert ("test rows decoded within the" in printed) == (users < 6)
    assert summary["num_rows"] == users
    assert [r["method"] for r in summary["results"]] == ["bigrec", "d3", "igd"]
    assert [r["length_penalty"] for r in summary["results"]] == [1.0, 0.0, 0.0]
    assert [r["alpha"] for r in summary["results"]] == [0.0, 0.0, 0.2]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["num_rows"] == users and "decode bigrec + d3 + igd" in on_disk["phase_seconds"]
    for name in (
        "results.csv",
        "recommendations.csv",
        "entropy_by_step.png",
        "zero_ig_by_step.png",
    ):
        assert (out / name).is_file()
    # Every decoded user got 3 recommendations per method.
    rec_lines = (out / "recommendations.csv").read_text().strip().splitlines()
    assert len(rec_lines) == 1 + 3 * 3 * users
    assert summary["results"][0]["coverage"] == pytest.approx(3 / 10)
