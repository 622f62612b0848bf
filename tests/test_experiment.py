"""``igdbeam experiment`` end to end on a tiny random model: grid, cache, resume, report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from factories.data import write_tiny_data
from factories.models import write_tiny_model
from igdbeam.app.experiment import PROFILES, Experiment, check_profile, run_name

TINY = replace(PROFILES["tiny"], losses=("plain", "igd"), train_steps=2, eval_steps=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("experiment")
    return {
        "root": root,
        "model": write_tiny_model(root / "model"),
        "data": write_tiny_data(root / "data"),
    }


def _experiment(tiny: dict[str, Path], out: Path, profile=TINY) -> Experiment:
    return Experiment(out, profile, data_dir=tiny["data"], model=str(tiny["model"]), progress=False)


def test_experiment_runs_caches_and_resumes(tiny, monkeypatch) -> None:
    from igdbeam.app.pipeline import target_positions

    out = tiny["root"] / "run"
    summary = _experiment(tiny, out).run()
    cells = {(r["loss"], r["decoding"]): r for r in summary["results"] if r["kind"] == "model"}
    baselines = {r["decoding"] for r in summary["results"] if r["kind"] == "baseline"}
    assert {"most-popular", "most-popular-unseen"} <= baselines
    assert set(cells) == {(loss, d) for loss in ("plain", "igd") for d in ("bigrec", "d3", "igd")}
    assert "vs_baseline" not in cells[("plain", "d3")]
    for r in summary["results"]:
        for name, m in r["metrics"].items():
            if name == "coverage":  # reported without an interval
                assert m["low"] is None and m["high"] is None
                continue
            assert m["low"] <= m["value"] + 1e-12 and m["value"] <= m["high"] + 1e-12
    for name in ("results.json", "results.md", "results.csv", "training_curves.png"):
        assert (out / name).is_file()
    md = (out / "results.md").read_text()
    assert "### Ablation (the paper's Table 2)" in md and "w/o loss weights" in md
    # The training curves hold the validation losses on zero-IG and positive-IG tokens.
    curve = summary["training_curves"][run_name("igd", 0, TINY.beta)]
    assert curve["step"][0] == 0 and len(curve["zero_ig"]) == len(curve["step"]) >= 2
    # LoRA adapters, stored small, in the cache.
    adapter = out / "models" / run_name("igd", 0, TINY.beta) / "model"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "model.safetensors").exists()

    # The reported NDCG@10 equals the decoded lists' metric, recomputed from the cache.
    exp = _experiment(tiny, out)
    exp.setup()
    decoded = exp.decode("igd", 0)
    from igdbeam.evaluation.metrics import ranking_metrics

    ref = ranking_metrics(
        decoded["igd"], target_positions(exp._ds, exp.test_rows), trie=exp.trie, ks=(10,)
    )
    assert cells[("igd", "igd")]["metrics"]["NDCG@10"]["value"] == pytest.approx(ref["NDCG@10"])

    # Resuming trains and decodes nothing: everything comes from the cache.
    import igdbeam.app.pipeline as pipeline

    def no_training(*a, **k):
        raise AssertionError("a cached model was trained again")

    def no_decoding(*a, **k):
        raise AssertionError("a cached chunk was decoded again")

    monkeypatch.setattr(pipeline, "train_model", no_training)
    monkeypatch.setattr(pipeline, "recommend_many", no_decoding)
    again = _experiment(tiny, out).run()
    assert json.dumps(again["results"]) == json.dumps(summary["results"])


def test_resume_decodes_only_missing_chunks(tiny) -> None:
    out = tiny["root"] / "partial"
    exp = _experiment(tiny, out, replace(TINY, losses=("plain",), decode_chunk=2))
    exp.setup()
    exp.train("plain", 0)
    first = exp.decode("plain", 0)
    chunks = sorted((out / "decodes" / "plain-s0").glob("chunk-*.json"))
    assert len(chunks) == 3  # 6 test rows in chunks of 2
    chunks[1].unlink()
    again = exp.decode("plain", 0)
    for m in first:
        np.testing.assert_array_equal(first[m], again[m])
    assert len(list((out / "decodes" / "plain-s0").glob("chunk-*.json"))) == 3


def test_other_settings_are_refused(tiny) -> None:
    out = tiny["root"] / "refuse"
    _experiment(tiny, out, replace(TINY, losses=("plain",))).setup()
    with pytest.raises(ValueError, match="other settings.*alpha"):
        _experiment(tiny, out, replace(TINY, losses=("plain",), alpha=0.5)).setup()


@pytest.mark.parametrize(
    "change",
    [
        {"losses": ("plain", "nope")},
        {"seeds": ()},
        {"alpha": 1.5},
        {"beta": -0.1},
        {"batch_size": 0},
        {"test_rows": 0},
        {"train_steps": 0},
        {"learning_rate": 0.0},
    ],
)
def test_bad_profiles_fail_before_work(change) -> None:
    with pytest.raises(ValueError):
        check_profile(replace(TINY, **change))


def test_cli_experiment_tiny(tiny, capsys) -> None:
    from igdbeam.app.cli import main

    out = tiny["root"] / "cli"
    code = main(
        [
            "experiment",
            "--profile",
            "tiny",
            "--data",
            str(tiny["data"]),
            "--model",
            str(tiny["model"]),
            "--out",
            str(out),
            "--losses",
            "plain,igd",
            "--train-steps",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "### Ablation" in printed and (out / "results.json").is_file()
    user_dir = tiny["root"] / "users-own"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as err:
        main(["experiment", "--profile", "tiny", "--out", str(user_dir), "--no-progress"])
    assert err.value.code == 2
    assert (user_dir / "notes.txt").read_text() == "mine"


def test_report_only_covers_the_finished_runs(tiny) -> None:
    out = tiny["root"] / "report-only"
    exp = _experiment(tiny, out)
    with pytest.raises(ValueError, match="no finished run"):
        exp.report()
    exp.train("plain", 0)
    exp.decode("plain", 0)
    summary = _experiment(tiny, out).report()  # igd is neither trained nor decoded
    assert {(r["loss"], r["decoding"]) for r in summary["results"] if r["kind"] == "model"} == {
        ("plain", d) for d in ("bigrec", "d3", "igd")
    }
    assert "| IGD (loss + decoding) | (not run) |" in (out / "results.md").read_text()
    assert not (out / "models" / run_name("igd", 0, TINY.beta)).exists()
    assert list(summary["training_curves"]) == ["plain-s0"]
    # Trained, not decoded: its curves and a fine-tunes line, no cells.
    igd = run_name("igd", 0, TINY.beta)
    exp.train("igd", 0)
    summary = _experiment(tiny, out).report()
    assert {r["loss"] for r in summary["results"] if r["kind"] == "model"} == {"plain"}
    assert list(summary["training_curves"]) == ["plain-s0", igd]
    log = json.loads((out / "models" / igd / "train_log.json").read_text())
    last = [r for r in log["log_history"] if "eval_loss_zero_ig" in r][-1]
    table = (out / "results.md").read_text().split("### Fine-tunes")[1]
    assert f"| {igd} | {TINY.train_steps} |" in table and "| not yet (no cells) |" in table
    assert f"{last['eval_loss_zero_ig']:.3f} / {last['eval_loss_pos_ig']:.3f}" in table
    assert "| plain-s0 | " in table and "| yes |" in table


def test_exclude_history_never_recommends_the_history(tiny) -> None:
    out = tiny["root"] / "exclude"
    exp = _experiment(tiny, out, replace(TINY, losses=("plain",), exclude_history=True))
    exp.setup()
    exp.train("plain", 0)
    decoded = exp.decode("plain", 0)
    for m, ranked in decoded.items():
        for row, items in zip(exp.test_rows, ranked, strict=True):
            history = {exp._ds.catalog.position(i) for i in row.history_item_id}
            assert history and not history & set(items.tolist()), m


def test_folders_written_before_a_new_profile_field_still_resume(tiny) -> None:
    out = tiny["root"] / "old-folder"
    exp = _experiment(tiny, out, replace(TINY, losses=("plain",)))
    exp.setup()
    path = out / "experiment.json"
    old = json.loads(path.read_text())
    del old["profile"]["exclude_history"]  # as written before the field existed
    path.write_text(json.dumps(old))
    _experiment(tiny, out, replace(TINY, losses=("plain",))).setup()
    with pytest.raises(ValueError, match="exclude_history"):
        _experiment(tiny, out, replace(TINY, losses=("plain",), exclude_history=True)).setup()


class _StopError(Exception):
    """Stands for a session ending in the middle of a fine-tune."""


def test_fine_tune_resumes_from_its_checkpoint(tiny, monkeypatch) -> None:
    """A fine-tune stopped after its step-2 checkpoint resumes from it and ends with the same
    weights and the same training log as a fine-tune that was never stopped."""
    from safetensors.torch import load_file

    from igdbeam.training.trainer import IGDTrainer

    prof = replace(TINY, losses=("igd",), train_steps=4, checkpoint_steps=2, eval_steps=2)
    whole = _experiment(tiny, tiny["root"] / "whole", prof)
    whole.setup()
    ref_dir = whole.train("igd", 0)
    assert not list(ref_dir.glob("checkpoint-*")), "checkpoints are removed once training ends"

    stopped = _experiment(tiny, tiny["root"] / "stopped", prof)
    stopped.setup()
    step = IGDTrainer.training_step

    def stop_at_step_3(self, *args, **kwargs):
        if self.state.global_step == 3:
            raise _StopError
        return step(self, *args, **kwargs)

    monkeypatch.setattr(IGDTrainer, "training_step", stop_at_step_3)
    with pytest.raises(_StopError):
        stopped.train("igd", 0)
    folder = stopped.model_dir("igd", 0)
    assert [p.name for p in folder.glob("checkpoint-*")] == ["checkpoint-2"]
    assert not (folder / "train_log.json").exists()

    monkeypatch.setattr(IGDTrainer, "training_step", step)
    resumed_dir = stopped.train("igd", 0)
    log = json.loads((resumed_dir / "train_log.json").read_text())
    ref_log = json.loads((ref_dir / "train_log.json").read_text())
    assert log["resumed_from"] == "checkpoint-2" and ref_log["resumed_from"] is None

    def losses(entries):
        return [(e["step"], e["loss"]) for e in entries if "loss" in e and "step" in e]

    assert len(losses(ref_log["log_history"])) >= 2
    assert losses(log["log_history"]) == pytest.approx(losses(ref_log["log_history"]), rel=1e-5)
    assert [e["step"] for e in log["log_history"] if "eval_loss" in e] == [0, 2, 4]
    got = load_file(str(resumed_dir / "model" / "adapter_model.safetensors"))
    ref = load_file(str(ref_dir / "model" / "adapter_model.safetensors"))
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_allclose(got[k].float().numpy(), ref[k].float().numpy(), atol=1e-6)


def test_epochs_with_early_stopping(tiny, monkeypatch) -> None:
    """The authors' schedule: validation and a checkpoint at each epoch's end, the best epoch
    kept; with patience 1 a validation loss that gets worse stops the run after one bad epoch.

    The validation loss is made to rise after the first epoch by construction (a large learning
    rate does not make a tiny model's loss rise on every CPU)."""
    from igdbeam.training.trainer import IGDTrainer

    loop = IGDTrainer.evaluation_loop

    def worse_after_epoch_1(self, *args, **kwargs):  # noqa: ANN001, ANN202
        output = loop(self, *args, **kwargs)
        epoch = self.state.epoch or 0.0
        if epoch > 0:
            output.metrics["eval_loss"] = 1.0 + abs(epoch - 1.0)  # best at epoch 1
        return output

    monkeypatch.setattr(IGDTrainer, "evaluation_loop", worse_after_epoch_1)
    prof = replace(
        TINY,
        losses=("plain",),
        train_steps=-1,
        epochs=4.0,
        early_stopping_patience=1,
        warmup_steps=0,
    )
    exp = _experiment(tiny, tiny["root"] / "early", prof)
    exp.setup()
    log = json.loads((exp.train("plain", 0) / "train_log.json").read_text())
    evals = [e for e in log["log_history"] if "eval_loss" in e and e.get("step", 0) > 0]
    epochs = [e["epoch"] for e in evals]
    assert epochs == sorted(epochs) and all(float(x).is_integer() for x in epochs)
    # Epoch 1 is the best, epoch 2 is worse (patience 1): no third or fourth epoch.
    assert epochs == [1.0, 2.0], "early stopping ended the run after its first bad epoch"
    assert not list((tiny["root"] / "early" / "models" / "plain-s0").glob("checkpoint-*"))


def test_profile_checks_of_the_schedule() -> None:
    with pytest.raises(ValueError, match="early_stopping_patience"):
        check_profile(replace(TINY, early_stopping_patience=2))  # needs train_steps=-1
    with pytest.raises(ValueError, match="methods"):
        check_profile(replace(TINY, methods=("beam",)))
    with pytest.raises(ValueError, match="dtype"):
        check_profile(replace(TINY, dtype="float16"))
    check_profile(PROFILES["cpu-large"])
    check_profile(PROFILES["gpu"])


def test_baselines_only_caches_the_lists_the_report_reads(tiny, monkeypatch) -> None:
    """``cache_baselines`` (``igdbeam experiment --baselines-only``) writes SASRec's lists where
    the report looks for them: a later report reads them back and trains nothing."""
    import sys
    import types

    from igdbeam.evaluation import sasrec

    out = tiny["root"] / "baselines-only"
    profile = replace(TINY, losses=("plain",), exclude_history=True)
    seen: dict[str, object] = {}

    def fake_recommend(model, histories, *, k, exclude, candidates):
        # Stands in for RecTools: each row gets the first k candidates it may receive.
        seen["exclude"], seen["candidates"] = exclude, np.asarray(candidates)
        lists = np.full((len(histories), k), -1, dtype=np.int64)
        for r, skip in enumerate(exclude):
            keep = [int(c) for c in np.asarray(candidates) if int(c) not in set(skip)][:k]
            lists[r, : len(keep)] = keep
        return lists, 0

    monkeypatch.setattr(sasrec, "rectools_available", lambda: True)
    monkeypatch.setattr(sasrec, "fit_sasrec", lambda sequences, settings: object())
    monkeypatch.setattr(sasrec, "recommend_sasrec", fake_recommend)
    monkeypatch.setitem(sys.modules, "rectools", types.SimpleNamespace(__version__="fake"))
    info = _experiment(tiny, out, profile).cache_baselines()
    cache = Path(info["cache_file"])
    assert cache.parent == out / "baselines" and cache.is_file() and not info["from_cache"]
    exp = _experiment(tiny, out, profile)
    exp.setup()
    history = exp._history(exp.test_rows)
    assert [list(h) for h in seen["exclude"]] == [list(h) for h in history]
    lists = np.asarray(json.loads(cache.read_text())["item_ids"])
    assert lists.shape == (len(exp.test_rows), 10)
    for row, skip in zip(lists.tolist(), history, strict=True):
        assert not set(row) & set(skip)

    def no_training(*args, **kwargs):
        raise AssertionError("SASRec was trained again")

    monkeypatch.setattr(sasrec, "fit_sasrec", no_training)
    exp.train("plain", 0)
    exp.decode("plain", 0)
    summary = _experiment(tiny, out, profile).report()
    assert summary["evaluation"]["sasrec"]["from_cache"] is True
    assert any(r["decoding"] == "sasrec" for r in summary["results"] if r["kind"] == "baseline")
