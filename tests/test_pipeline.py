"""Pipeline helpers: user sampling, padding, batched recommendation order, tables, losses."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from factories.data import TITLES, write_tiny_data
from factories.models import tiny_tokenizer, write_tiny_model
from igdbeam.app.cli import EVALUATE_COLUMNS
from igdbeam.app.demo import decode_in_chunks, format_table
from igdbeam.app.pipeline import (
    ExampleDataset,
    build_trie,
    encode_prompts,
    left_pad,
    make_loss,
    pad_collate,
    recommend,
    recommend_many,
    recommendations_table,
    resolve_decoder,
    select_test_rows,
    select_test_users,
)
from igdbeam.data import Sample, load_dataset
from igdbeam.training.prompts import IGNORE_INDEX


def _s(user: str, item: int) -> Sample:
    return Sample(user, [TITLES[0]], TITLES[item], [100], 100 + item)


def test_select_test_users() -> None:
    rows = [_s("a", 1), _s("b", 2), _s("a", 3), _s("c", 4)]
    assert select_test_users(rows, None) == rows
    last = select_test_users(rows, 10)
    assert sorted((s.user_id, s.item_id) for s in last) == [("a", 103), ("b", 102), ("c", 104)]
    two = select_test_users(rows, 2, seed=1)
    assert len(two) == 2 and two == select_test_users(rows, 2, seed=1)
    assert two == select_test_users(rows, 3, seed=1)[:2]  # prefixes are samples too


def test_select_test_rows_spreads_users_first() -> None:
    rows = [_s("a", 1), _s("b", 2), _s("a", 3), _s("c", 4), _s("b", 5), _s("a", 6)]
    picked = select_test_rows(rows, 10, seed=3)
    assert len(picked) == 6 and sorted(map(id, picked)) == sorted(map(id, rows))  # each once
    # The first three are every user's last row, in the order select_test_users gives.
    assert picked[:3] == select_test_users(rows, 3, seed=3)
    assert {s.item_id for s in picked[:3]} == {106, 105, 104}
    assert picked[:4] == select_test_rows(rows, 4, seed=3)  # prefixes are samples too
    assert select_test_rows(rows, 0) == []


def test_left_pad() -> None:
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@dataclass
class _Out:
    item_ids: torch.Tensor
    scores: torch.Tensor


def test_recommend_restores_row_order(tmp_path: Path) -> None:
    """Rows are batched by prompt length; results must come back in the input order."""
    tok = tiny_tokenizer()
    ds = load_dataset(write_tiny_data(tmp_path / "d"))
    trie = build_trie(ds, tok)
    rows = [
        Sample("x", TITLES[:5], TITLES[1], [100, 101, 102, 103, 104], 101),
        Sample("y", TITLES[:1], TITLES[2], [100], 102),
        Sample("z", TITLES[:3], TITLES[3], [100, 101, 102], 103),
    ]
    prompts = encode_prompts(tok, rows)
    lengths = {len(p): i for i, p in enumerate(prompts)}
    assert len(lengths) == 3
    calls = []

    def fake_generate(model, input_ids, attention_mask, *, trie, num_beams, alpha, length_penalty):
        calls.append((input_ids.shape[0], alpha, length_penalty))
        real = attention_mask.sum(1).tolist()
        items = torch.tensor([[lengths[n], (lengths[n] + 1) % 3] for n in real])
        return _Out(items, -torch.arange(2.0).repeat(len(real), 1))

    model = torch.nn.Linear(1, 1)
    recs = recommend(
        model,
        tok,
        trie,
        rows,
        num_beams=3,
        batch_size=2,
        alpha=0.5,
        length_penalty=1.0,
        generate_fn=fake_generate,
        progress=False,
    )
    assert calls == [(2, 0.5, 1.0), (1, 0.5, 1.0)]
    assert recs.item_ids.tolist() == [[0, 1, -1], [1, 2, -1], [2, 0, -1]]
    assert recs.scores[0, :2].tolist() == [0.0, -1.0] and recs.scores[0, 2] == -np.inf
    table = recommendations_table(ds, rows, recs)
    assert [(r["user_id"], r["rank"], r["item_id"], r["hit"]) for r in table[:2]] == [
        ("x", 1, 100, 0),
        ("x", 2, 101, 1),
    ]
    assert len(table) == 6


def test_recommend_many_shares_work_and_equals_one_call_per_method(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    import igdbeam

    folder = write_tiny_model(tmp_path / "m")
    tok = tiny_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ds = load_dataset(write_tiny_data(tmp_path / "d"))
    trie = build_trie(ds, tok)
    rows = ds.split("test") + ds.split("valid")
    methods = {
        "bigrec": {"alpha": 0.0, "length_penalty": 1.0},
        "d3": {"alpha": 0.0, "length_penalty": 0.0},
        "igd": {"alpha": 0.4, "length_penalty": 0.0},
    }
    kw = {"num_beams": 4, "batch_size": 3, "progress": False}
    shared = recommend_many(model, tok, trie, rows, methods, **kw)
    calls = []

    def one_by_one(*args, **kwargs):  # not igdbeam.generate itself: one call per method
        calls.append(kwargs["alpha"])
        return igdbeam.generate(*args, **kwargs)

    separate = recommend_many(model, tok, trie, rows, methods, generate_fn=one_by_one, **kw)
    assert len(calls) == 3 * -(-len(rows) // 3)
    for name in methods:
        assert shared[name].item_ids.tolist() == separate[name].item_ids.tolist()
        np.testing.assert_allclose(shared[name].scores, separate[name].scores, atol=1e-5)
        assert shared[name].extra["prefill_seconds"] > 0 and separate[name].extra == {}
    assert shared["bigrec"].extra["shared_search_with"] == ["d3"]
    assert shared["igd"].extra["shared_search_with"] == []
    single = recommend(model, tok, trie, rows, alpha=0.4, progress=False, num_beams=4)
    assert single.item_ids.tolist() == shared["igd"].item_ids.tolist()
    with pytest.raises(ValueError, match="no decoding methods"):
        recommend_many(model, tok, trie, rows, {}, **kw)


def test_max_history_items(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    rows = [Sample("x", TITLES[:5], TITLES[6], [0] * 5, 6)]
    (short,) = encode_prompts(tok, rows, max_history_items=2)
    (full,) = encode_prompts(tok, rows)
    assert len(short) < len(full)
    assert tok.decode(short).count('"') == 4


def test_example_dataset_and_collate() -> None:
    tok = tiny_tokenizer()
    rows = [
        Sample("x", TITLES[:2], TITLES[3], [0, 1], 3),
        Sample("y", TITLES[:1], TITLES[4], [0], 4),
    ]
    data = ExampleDataset(tok, rows, progress=False)
    batch = pad_collate(tok.pad_token_id)([data[0], data[1]])
    n0, n1 = len(data[0]["input_ids"]), len(data[1]["input_ids"])
    assert batch["input_ids"].shape == (2, max(n0, n1))
    assert batch["attention_mask"].sum(1).tolist() == [n0, n1]
    short = 0 if n0 < n1 else 1
    assert (batch["labels"][short, min(n0, n1) :] == IGNORE_INDEX).all()
    assert batch["labels"][0, :n0].tolist() == data[0]["labels"]
    ex = data[0]
    assert ex["prompt_ids"] + ex["completion_ids"] == ex["input_ids"]
    assert ex["completion_ids"] == [x for x in ex["labels"] if x != IGNORE_INDEX]
    assert tok.decode(ex["cf_prompt_ids"]).endswith("before: \n\n### Response:\n")


def test_make_loss_errors() -> None:
    with pytest.raises(ValueError, match="loss must be one of plain, pos, cft, igd"):
        make_loss(None, "focal", 0.1)


def test_resolve_decoder_errors() -> None:
    with pytest.raises(ValueError, match="MODULE:FUNCTION"):
        resolve_decoder("nocolon")
    with pytest.raises(ValueError, match="not callable"):
        resolve_decoder("math:pi")
    assert resolve_decoder("math:sqrt")(4.0) == 2.0


def test_format_table() -> None:
    row = {
        "method": "igd",
        "NDCG@5": 0.5,
        "NDCG@10": 0.25,
        "HR@5": 1.0,
        "HR@10": 1.0,
        "coverage": 0.1,
        "same_first_token_share": 0.0,
        "mean_popularity": 12.34,
        "seconds": 3.21,
    }
    lines = format_table([row], EVALUATE_COLUMNS).splitlines()
    assert lines[0].split() == [
        "method",
        "NDCG@5",
        "NDCG@10",
        "HR@5",
        "HR@10",
        "coverage",
        "same-1st-token",
        "mean-pop",
        "seconds",
    ]
    assert lines[2].split() == [
        "igd",
        "0.5000",
        "0.2500",
        "1.0000",
        "1.0000",
        "0.1000",
        "0.000",
        "12.3",
        "3.2",
    ]


def test_decode_in_chunks_stops_before_the_deadline() -> None:
    """A fake clock: each chunk costs 10 s plus 30 s of warm-up on the first one."""
    now = [0.0]
    seen: list[list[int]] = []

    def decode(part):
        now[0] += 10.0 + (30.0 if not seen else 0.0)
        seen.append(list(part))
        return {"m": len(part)}

    rows = list(range(100))
    done, parts = decode_in_chunks(decode, rows, 8, 95.0, clock=lambda: now[0], progress=False)
    # Chunks end at 40 s (warm-up; estimate 40 -> 80 fits), 50, 60, 70, 80, 90; a seventh would
    # end at 100 > 95 (the estimate is now the mean of the chunks after the first: 10 s).
    assert done == 48 and [p["m"] for p in parts] == [8] * 6
    assert seen[1] == list(range(8, 16))
    now[0] = 0.0
    seen.clear()
    done, parts = decode_in_chunks(decode, rows, 8, 20.0, clock=lambda: now[0], progress=False)
    assert done == 8  # the first chunk always runs; its 40 s say no second one fits
    now[0] = 0.0
    seen.clear()
    done, parts = decode_in_chunks(decode, rows[:20], 8, None, clock=lambda: now[0], progress=False)
    assert done == 20 and [p["m"] for p in parts] == [8, 8, 4]


def _fake_trainer_module(calls: list) -> types.ModuleType:
    """A stand-in for igdbeam.training.loss_func: plain shifted cross-entropy, recording its
    arguments."""
    mod = types.ModuleType("igdbeam.training.loss_func")

    def make_compute_loss_func(trie, beta, loss="igd"):
        calls.append((beta, loss))

        def compute(outputs, labels, num_items_in_batch=None):
            logits = outputs.logits[:, :-1].float()
            return torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                labels[:, 1:].reshape(-1),
                ignore_index=IGNORE_INDEX,
            )

        return compute

    mod.make_compute_loss_func = make_compute_loss_func
    return mod


@pytest.mark.slow
def test_train_model_with_a_stand_in_loss(tmp_path: Path, monkeypatch) -> None:
    from transformers import AutoModelForCausalLM

    from igdbeam.app.pipeline import train_model

    calls: list = []
    monkeypatch.setitem(sys.modules, "igdbeam.training.loss_func", _fake_trainer_module(calls))
    monkeypatch.setitem(sys.modules, "igdbeam.training.collators", None)  # no IGDTrainer: fallback
    tok = tiny_tokenizer()
    ds = load_dataset(write_tiny_data(tmp_path / "d"))
    trie = build_trie(ds, tok)
    model = AutoModelForCausalLM.from_pretrained(write_tiny_model(tmp_path / "m"))
    before = [p.detach().clone() for p in model.parameters()]
    metrics = train_model(
        model,
        tok,
        trie,
        ds.split("train"),
        tmp_path / "out",
        loss="cft",
        beta=0.3,
        max_steps=2,
        batch_size=4,
        progress=False,
    )
    assert calls == [(0.3, "cft")]  # the fallback Trainer path (no IGDTrainer in the stand-in)
    assert metrics["train_loss"] > 0 and metrics["model_dir"] == str(tmp_path / "out" / "model")
    assert (tmp_path / "out" / "model" / "config.json").is_file()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert make_loss(trie, "plain", 0.3) is not None and calls[-1] == (0.3, "ce")
