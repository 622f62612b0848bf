"""The igdbeam command line: help, argument errors, bad data and tiny end-to-end runs (the tiny
data and model folders are conftest's ``tiny_assets``)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from factories.cli import DECODER, run_cli, subprocess_env
from igdbeam.app.cli import build_parser, main


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (None, ["prepare", "stats", "train", "recommend", "evaluate", "demo", "accelerate"]),
        ("prepare", ["--dataset", "--out", "--max-history", "--min-rating", "--overwrite"]),
        ("stats", ["--data", "--dataset", "--template", "--weighting", "--out", "--plot"]),
        ("train", ["--loss", "{plain,pos,cft,igd}", "--beta", "--output-dir", "--max-steps"]),
        ("recommend", ["--method", "--alpha", "--length-penalty", "--num-beams", "--out"]),
        ("evaluate", ["--methods", "--num-users", "--decoder", "--split", "--threads"]),
        ("demo", ["--out", "--num-users", "--overwrite"]),
    ],
)
def test_help_explains_every_option(command, options, capsys) -> None:
    code, out, _ = run_cli(([command] if command else []) + ["--help"], capsys)
    assert code == 0
    for opt in options:
        assert opt in out
    if command:
        # Every option of the subcommand has a help text (argparse prints defaults for them).
        sub = build_parser()._subparsers._group_actions[0].choices[command]
        for action in sub._actions:
            assert action.help, f"{command} {action.option_strings} has no help"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "--out", "o", "--alpha", "1.5"], "argument --alpha: must lie in [0, 1]"),
        (["evaluate", "--out", "o", "--num-beams", "0"], "--num-beams: must be a positive int"),
        (["train", "--output-dir", "o", "--beta", "-1"], "argument --beta: must lie in [0, 1]"),
        (["recommend", "--out", "o", "--method", "beam"], "invalid choice: 'beam'"),
        (["evaluate"], "the following arguments are required: --out"),
    ],
)
def test_argument_errors(argv, message, capsys) -> None:
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and message in err


def test_missing_data_dir(tmp_path: Path, capsys) -> None:
    out = tmp_path / "res"
    code, _, err = run_cli(
        ["evaluate", "--data", str(tmp_path / "none"), "--out", str(out)], capsys
    )
    assert code == 2
    assert err.startswith("igdbeam: error: data directory") and "does not exist" in err
    assert not out.exists()


def test_wrong_columns_and_empty_history(tiny_assets, tmp_path: Path, capsys) -> None:
    data, model = tiny_assets
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    (bad / "test.csv").write_text("user_id,item_id\n1,2\n")
    argv = ["evaluate", "--data", str(bad), "--model", str(model), "--out", str(tmp_path / "o")]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "missing column(s) history_item_title, item_title, history_item_id" in err
    (bad / "test.csv").write_text(
        "user_id,history_item_title,item_title,history_item_id,item_id\n7,[],Babe (1995),[],107\n"
    )
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "user '7' has an empty history" in err
    assert not (tmp_path / "o").exists()


def test_unknown_method_and_decoder(tiny_assets, tmp_path: Path, capsys) -> None:
    data, model = tiny_assets
    base = ["evaluate", "--data", str(data), "--model", str(model), "--out", str(tmp_path / "o")]
    code, _, err = run_cli(base + ["--methods", "bigrec,nope"], capsys)
    assert code == 2 and "unknown method(s) ['nope']" in err
    code, _, err = run_cli(base + ["--decoder", "no_such_module:f"], capsys)
    assert code == 2 and "cannot load the decoder 'no_such_module:f'" in err
    assert not (tmp_path / "o").exists()


def test_evaluate_and_recommend_tiny(tiny_assets, tmp_path: Path, capsys) -> None:
    data, model = tiny_assets
    out = tmp_path / "eval"
    common = [
        "--data",
        str(data),
        "--model",
        str(model),
        "--decoder",
        DECODER,
        "--include-history",
        "--no-progress",
    ]
    code, stdout, err = run_cli(
        ["evaluate", *common, "--out", str(out), "--num-beams", "3", "--methods", "bigrec,d3"],
        capsys,
    )
    assert code == 0, err
    assert "bigrec" in stdout and "NDCG@10" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_rows"] == 6 and metrics["num_processes"] == 1
    assert [r["method"] for r in metrics["results"]] == ["bigrec", "d3"]
    assert metrics["results"][0]["length_penalty"] == 1.0
    for r in metrics["results"]:
        assert 0.0 <= r["NDCG@10"] <= r["HR@10"] <= 1.0
    with (out / "metrics.csv").open() as fh:
        assert [r["method"] for r in csv.DictReader(fh)] == ["bigrec", "d3"]
    assert (out / "entropy_by_step.png").read_bytes()[:4] == b"\x89PNG"
    with (out / "recommendations.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["method"] for r in rows} == {"bigrec", "d3"}
    assert all(1 <= int(r["rank"]) <= 3 for r in rows)

    recs = tmp_path / "recs.csv"
    code, stdout, err = run_cli(
        ["recommend", *common, "--out", str(recs), "--num-beams", "2", "--num-users", "3"], capsys
    )
    assert code == 0, err
    with recs.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len({r["user_id"] for r in rows}) == 3
    assert json.loads(recs.with_suffix(".json").read_text())["method"] == "igd"


def test_stats_tiny(tiny_assets, tmp_path: Path, capsys) -> None:
    data, model = tiny_assets
    code, stdout, err = run_cli(
        [
            "stats",
            "--data",
            str(data),
            "--model",
            str(model),
            "--out",
            str(tmp_path / "s.json"),
            "--plot",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0, err
    assert "zero_ig_token_share" in stdout
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["catalog_items"] == 10 and stats["splits"]["test"]["rows"] == 6
    assert (tmp_path / "zero_ig_by_step.png").is_file()


def test_train_needs_the_trainer_module(tiny_assets, tmp_path: Path, capsys) -> None:
    pytest.importorskip("igdbeam.training.trainer")
    data, model = tiny_assets
    # Another run's checkpoint save in progress: the save must not share (and delete) it.
    other = tmp_path / ".t.saving"
    other.mkdir()
    (other / "model.safetensors").write_text("another run's save")
    argv = [
        "train", "--data", str(data), "--model", str(model), "--output-dir", str(tmp_path / "t"),
        "--loss", "igd", "--max-steps", "2", "--batch-size", "2", "--no-progress",
    ]  # fmt: skip
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert (tmp_path / "t" / "model" / "config.json").is_file()
    assert json.loads((tmp_path / "t" / "train_metrics.json").read_text())["loss"] == "igd"
    assert json.loads((tmp_path / "t" / ".igdbeam-output").read_text())["command"] == "train"
    assert (other / "model.safetensors").read_text() == "another run's save"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".t.saving", "t"]
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [
        ".igdbeam-output",
        "model",
        "train_metrics.json",
    ]
    # A second run needs --overwrite, and then replaces the model (no temp folder left).
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "already exists; pass --overwrite" in err
    first = (tmp_path / "t" / "model" / "model.safetensors").stat().st_mtime_ns
    code, _, err = run_cli([*argv, "--overwrite", "--lr", "0.01"], capsys)
    assert code == 0, err
    assert (tmp_path / "t" / "model" / "model.safetensors").stat().st_mtime_ns != first
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [
        ".igdbeam-output",
        "model",
        "train_metrics.json",
    ]


@pytest.mark.slow
def test_accelerate_two_processes(tiny_assets, tmp_path: Path) -> None:
    """`accelerate launch` shards evaluation over 2 CPU processes and gathers every row."""
    pytest.importorskip("accelerate")
    data, model = tiny_assets
    out = tmp_path / "eval2"
    env = subprocess_env()
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",  # accelerate's torchrun launcher; igdbeam picks CPU ranks without CUDA
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "igdbeam.app.cli",
        "evaluate",
        "--data",
        str(data),
        "--model",
        str(model),
        "--decoder",
        DECODER,
        "--include-history",
        "--out",
        str(out),
        "--num-beams",
        "3",
        "--methods",
        "d3",
        "--batch-size",
        "2",
        "--threads",
        "1",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["num_rows"] == 6
    # Same rows and the same recommendations as a single process.
    single = tmp_path / "eval1"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(data),
                "--model",
                str(model),
                "--decoder",
                DECODER,
                "--include-history",
                "--out",
                str(single),
                "--num-beams",
                "3",
                "--methods",
                "d3",
                "--batch-size",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    with (out / "recommendations.csv").open() as a, (single / "recommendations.csv").open() as b:
        two, one = list(csv.DictReader(a)), list(csv.DictReader(b))
    key = ("user_id", "rank", "item_id", "target_item_id")
    assert [tuple(r[k] for k in key) for r in two] == [tuple(r[k] for k in key) for r in one]
    assert [float(r["score"]) for r in two] == pytest.approx(
        [float(r["score"]) for r in one], rel=1e-4
    )


@pytest.mark.slow
def test_accelerate_two_processes_train(tiny_assets, tmp_path: Path) -> None:
    """`accelerate launch` trains data-parallel on 2 CPU processes (DDP over gloo)."""
    pytest.importorskip("igdbeam.training.trainer")
    data, model = tiny_assets
    env = subprocess_env()
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
        "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "igdbeam.app.cli", "train", "--data", str(data), "--model", str(model),
        "--output-dir", str(tmp_path / "run"), "--loss", "igd", "--max-steps", "3",
        "--batch-size", "2", "--threads", "1", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained with the igd loss") == 1  # printed by the main process
    assert (tmp_path / "run" / "model" / "config.json").is_file()
