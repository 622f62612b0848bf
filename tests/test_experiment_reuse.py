"""An experiment that decodes another one's fine-tunes (``models_from``), and the report of the
rows decoded so far when the test rows are a seeded random order (``test_rows`` set)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from factories.data import write_tiny_data
from factories.models import write_tiny_model
from igdbeam.app.experiment import PROFILES, Experiment, run_name
from igdbeam.evaluation.metrics import ranking_metrics

# decode_batch=1: every row is decoded alone (no padding), so its lists do not depend on which
# rows share its chunk, and two experiments decoding the same rows in other orders agree exactly.
TINY = replace(
    PROFILES["tiny"], losses=("plain", "igd"), train_steps=2, eval_steps=1, decode_batch=1
)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny experiment with both fine-tunes trained and decoded (rows in the split's order)."""
    root = tmp_path_factory.mktemp("reuse")
    tiny = {
        "root": root,
        "model": write_tiny_model(root / "model"),
        "data": write_tiny_data(root / "data"),
        "src": root / "src",
    }
    _experiment(tiny, tiny["src"], TINY).run()
    return tiny


def _experiment(tiny: dict[str, Path], out: Path, profile, **kw) -> Experiment:
    return Experiment(
        out, profile, data_dir=tiny["data"], model=str(tiny["model"]), progress=False, **kw
    )


def _key(row) -> tuple:
    return row.user_id, row.item_id, tuple(row.history_item_id)


def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import igdbeam.app.pipeline as pipeline

    def refuse(*a, **k):
        raise AssertionError("an experiment with models_from trained a model")

    monkeypatch.setattr(pipeline, "train_model", refuse)


def test_models_from_decodes_the_source_fine_tunes(source, monkeypatch) -> None:
    _no_training(monkeypatch)
    src = _experiment(source, source["src"], TINY)
    src.setup()
    out = source["root"] / "reuse-all"
    # The same decoding, the test rows in a seeded random order, smaller chunks.
    profile = replace(TINY, test_rows=len(src.test_rows), decode_chunk=2, dtype="float32")
    exp = _experiment(source, out, profile, models_from=source["src"])
    summary = exp.run()
    assert summary["settings"]["models_from"] == "../src"
    assert json.loads((out / "experiment.json").read_text())["models_from"] == "../src"
    assert not (out / "models").exists()
    assert exp.test_rows != src.test_rows  # another order ...
    where = {_key(row): i for i, row in enumerate(src.test_rows)}
    perm = [where[_key(row)] for row in exp.test_rows]
    assert sorted(perm) == list(range(len(src.test_rows)))  # ... of the same rows
    # Each row's lists equal the source experiment's lists of that row.
    for loss in ("plain", "igd"):
        mine, theirs = exp.decode(loss, 0), src.decode(loss, 0)
        for method in mine:
            np.testing.assert_array_equal(mine[method], theirs[method][perm])
    md = (out / "results.md").read_text()
    assert "The fine-tunes are read from `../src`" in md and "Decoded in float32." in md
    assert "| plain-s0 | 2 |" in md  # the fine-tunes table reads the source's train logs


def test_models_from_refuses_other_training_settings(source) -> None:
    out = source["root"] / "reuse-refused"
    with pytest.raises(ValueError, match=r"trained with other settings \(train_steps\)"):
        _experiment(source, out, replace(TINY, train_steps=3), models_from=source["src"]).setup()
    with pytest.raises(ValueError, match="no experiment.json"):
        _experiment(source, out, TINY, models_from=source["root"] / "data").setup()
    assert not out.exists()  # refused before anything was written
    # Decoding settings may differ; a run the source did not train is not trained here.
    exp = _experiment(
        source, out, replace(TINY, alpha=0.7, seeds=(0, 1)), models_from=source["src"]
    )
    exp.setup()
    with pytest.raises(ValueError, match="holds no finished fine-tune"):
        exp.train("plain", 1)


def test_cli_models_from(source, capsys) -> None:
    from igdbeam.app.cli import main

    def cli(out: Path, *extra: str) -> int:
        return main(
            [
                "experiment",
                "--profile",
                "tiny",
                "--data",
                str(source["data"]),
                "--model",
                str(source["model"]),
                "--out",
                str(out),
                "--losses",
                "plain,igd",
                "--train-steps",
                "2",
                "--no-progress",
                *extra,
            ]
        )

    out = source["root"] / "reuse-cli"
    reuse = ["--alpha", "0.5", "--decode-chunk", "3", "--models-from"]
    # The source was trained with eval_steps 1, the tiny profile has 2: refused, nothing written.
    with pytest.raises(SystemExit) as err:
        cli(out, *reuse, str(source["src"]))
    assert err.value.code == 2 and "eval_steps" in capsys.readouterr().err
    assert not out.exists()
    src = source["root"] / "src-cli"
    assert cli(src) == 0
    assert cli(out, *reuse, str(src)) == 0
    assert "### Ablation" in capsys.readouterr().out
    settings = json.loads((out / "experiment.json").read_text())
    assert settings["models_from"] == "../src-cli"
    assert settings["profile"]["alpha"] == 0.5 and settings["profile"]["decode_chunk"] == 3
    assert sorted(p.name for p in (out / "decodes" / "plain-s0").glob("chunk-*")) == [
        "chunk-0000.json",
        "chunk-0001.json",
    ]


def test_report_covers_the_rows_every_run_has_decoded(source, monkeypatch) -> None:
    _no_training(monkeypatch)
    out = source["root"] / "reuse-partial"
    profile = replace(TINY, test_rows=6, decode_chunk=2)
    exp = _experiment(source, out, profile, models_from=source["src"])
    exp.setup()
    assert len(exp.test_rows) == 6
    plain, igd = exp.decode("plain", 0), exp.decode("igd", 0)
    folder = out / "decodes"
    (folder / run_name("igd", 0, TINY.beta) / "chunk-0002.json").unlink()  # igd: rows 0-3
    (folder / "plain-s0" / "chunk-0001.json").unlink()  # plain: rows 0-1, then a gap
    assert exp.decoded_rows("plain", 0) == 2 and exp.decoded_rows("igd", 0) == 4

    summary = _experiment(source, out, profile, models_from=source["src"]).report()
    assert summary["rows"] == 2
    assert "Decoding in progress: 2 of 6 test rows" in summary["note"]
    assert "Decoding in progress: 2 of 6 test rows" in (out / "results.md").read_text()
    from igdbeam.app.pipeline import target_positions

    rows = exp.test_rows[:2]
    positions = target_positions(exp._ds, rows)
    cells = {(r["loss"], r["decoding"]): r for r in summary["results"] if r["kind"] == "model"}
    assert set(cells) == {(loss, d) for loss in ("plain", "igd") for d in plain}
    for (loss, method), cell in cells.items():
        lists = (plain if loss == "plain" else igd)[method][:2]
        ref = ranking_metrics(lists, positions, trie=exp.trie, ks=(10,))["NDCG@10"]
        assert cell["metrics"]["NDCG@10"]["value"] == pytest.approx(ref)
    pop = [r for r in summary["results"] if r["decoding"] == "most-popular"]
    assert pop and all(r["metrics"]["HR@10"]["value"] in (0.0, 0.5, 1.0) for r in pop)

    # With every row decoded by every run the note goes away.
    exp.decode("plain", 0)
    exp.decode("igd", 0)
    summary = _experiment(source, out, profile, models_from=source["src"]).report()
    assert summary["rows"] == 6 and summary["note"] is None


def test_rows_in_split_order_report_only_finished_runs(source, monkeypatch) -> None:
    _no_training(monkeypatch)
    out = source["root"] / "reuse-split-order"
    profile = replace(TINY, decode_chunk=2)  # test_rows None: the split's order
    exp = _experiment(source, out, profile, models_from=source["src"])
    exp.setup()
    exp.decode("plain", 0)
    exp.decode("igd", 0)
    (out / "decodes" / run_name("igd", 0, TINY.beta) / "chunk-0002.json").unlink()
    summary = _experiment(source, out, profile, models_from=source["src"]).report()
    assert summary["rows"] == 6 and summary["note"] is None
    assert {r["loss"] for r in summary["results"] if r["kind"] == "model"} == {"plain"}


def test_report_compares_with_the_source_decoded_in_another_precision(source, monkeypatch) -> None:
    _no_training(monkeypatch)
    assert TINY.dtype == "float32"
    out = source["root"] / "reuse-bf16"
    profile = replace(TINY, dtype="bfloat16", test_rows=4, decode_chunk=2)
    exp = _experiment(source, out, profile, models_from=source["src"])
    summary = exp.run()
    src = _experiment(source, source["src"], TINY)
    src.setup()
    where = {_key(row): i for i, row in enumerate(src.test_rows)}
    perm = [where[_key(row)] for row in exp.test_rows]
    records = {(r["run"], r["decoding"]): r for r in summary["other_precision"]}
    assert set(records) == {(run, m) for run in ("plain-s0", "igd-b0.1-s0") for m in TINY.methods}
    for loss in ("plain", "igd"):
        mine, theirs = exp.decode(loss, 0), src.decode(loss, 0)
        for method in mine:
            a, b = mine[method][:, :10], theirs[method][perm, :10]
            r = records[(run_name(loss, 0, TINY.beta), method)]
            assert r["rows"] == 4
            assert r["identical"] == pytest.approx(np.mean(np.all(a == b, axis=1)))
    md = (out / "results.md").read_text()
    assert "### The same fine-tunes decoded in float32 (4 rows decoded by both)" in md
    assert "NDCG@10 bfloat16 | NDCG@10 float32" in md
    # The same precision as the source: nothing to compare.
    same = _experiment(
        source, source["root"] / "reuse-f32", replace(TINY, test_rows=4), models_from=source["src"]
    ).run()
    assert "other_precision" not in same


def test_trained_runs_are_decoded_chunk_by_chunk_in_turn(source, monkeypatch) -> None:
    """A decode stopped part-way leaves both runs with the same rows: the report compares them."""
    _no_training(monkeypatch)
    out = source["root"] / "reuse-in-turn"
    profile = replace(TINY, test_rows=6, decode_chunk=2)
    order: list[tuple[str, str]] = []
    original = Experiment._decode_chunk

    def recorded(self, model, rows, start, path):
        if len(order) == 3:
            raise KeyboardInterrupt  # stopped during the 4th chunk
        order.append((path.parent.name, path.name))
        return original(self, model, rows, start, path)

    monkeypatch.setattr(Experiment, "_decode_chunk", recorded)
    with pytest.raises(KeyboardInterrupt):
        _experiment(source, out, profile, models_from=source["src"]).run()
    igd = run_name("igd", 0, TINY.beta)
    assert order == [
        ("plain-s0", "chunk-0000.json"),
        (igd, "chunk-0000.json"),
        ("plain-s0", "chunk-0001.json"),
    ]
    summary = _experiment(source, out, profile, models_from=source["src"]).report()
    assert summary["rows"] == 2 and {r["loss"] for r in summary["results"]} >= {"plain", "igd"}
    # Resumed, it decodes the rest in the same order and reports every row.
    monkeypatch.setattr(Experiment, "_decode_chunk", original)
    summary = _experiment(source, out, profile, models_from=source["src"]).run()
    assert summary["rows"] == 6 and summary["note"] is None
