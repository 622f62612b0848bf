"""Optional packages are checked before any work, and results are written before plots.

A missing package is simulated in a child interpreter: a ``sitecustomize`` installs a meta-path
finder that makes ``import <package>`` fail, and records at exit which modules were imported,
so the tests can assert that nothing heavy (data pipeline, decoding, training) ever ran.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from factories.cli import DECODER, one_error_line, run_cli, subprocess_env

BLOCKER = textwrap.dedent(
    """
    import atexit, json, os, sys

    BLOCKED = set(filter(None, os.environ.get("IGDBEAM_TEST_BLOCK", "").split(",")))

    class _Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _Blocker())

    def _record():
        with open(os.environ["IGDBEAM_TEST_MODULES"], "w") as fh:
            json.dump(sorted(sys.modules), fh)

    atexit.register(_record)
    """
)
# Modules that only real work imports: the pipeline (data, models, tries), decoding, training.
HEAVY = ("igdbeam.app.pipeline", "igdbeam.decoding", "igdbeam.training", "igdbeam.app.demo")


def run_blocked(
    tmp_path: Path, blocked: str, argv: list[str], **env: str
) -> tuple[int, str, list[str]]:
    """``python -m igdbeam.app.cli <argv>`` with ``blocked`` (comma-separated) unimportable;
    return the exit status, stderr and the modules that were imported."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    modules = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-m", "igdbeam.app.cli", *argv],
        env=subprocess_env(
            site,
            IGDBEAM_TEST_BLOCK=blocked,
            IGDBEAM_TEST_MODULES=str(modules),
            **env,
        ),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    return proc.returncode, proc.stderr, json.loads(modules.read_text())


def assert_stopped_before_work(code: int, err: str, imported: list[str], package: str) -> str:
    line = one_error_line(code, err)
    assert f"needs the optional package(s) '{package}'" in line
    assert "not installed" in line and "pip install 'igdbeam[pipeline]'" in line
    heavy = [m for m in imported if m.startswith(HEAVY)]
    assert heavy == [], f"work started before the check: {heavy}"
    return line


def test_blocker_really_blocks(tmp_path: Path) -> None:
    """The simulation itself: the blocked package cannot be imported, others can."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    code = "import json\ntry:\n import matplotlib\nexcept ImportError as e:\n print(e.name)"
    env = subprocess_env(
        site, IGDBEAM_TEST_BLOCK="matplotlib", IGDBEAM_TEST_MODULES=str(tmp_path / "m.json")
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "matplotlib", out.stderr


def test_evaluate_without_matplotlib_stops_before_decoding(tiny_assets, tmp_path: Path) -> None:
    data, model = tiny_assets
    out = tmp_path / "new" / "eval"
    argv = [
        "evaluate",
        "--data",
        str(data),
        "--model",
        str(model),
        "--decoder",
        DECODER,
        "--include-history",
    ]
    code, err, imported = run_blocked(tmp_path, "matplotlib", [*argv, "--out", str(out)])
    line = assert_stopped_before_work(code, err, imported, "matplotlib")
    assert "'igdbeam evaluate'" in line and "the PNG plots" in line
    assert not (tmp_path / "new").exists()  # not even the parent folder was created


def test_stats_plot_needs_matplotlib(tiny_assets, tmp_path: Path) -> None:
    data, model = tiny_assets
    argv = ["stats", "--data", str(data), "--model", str(model)]
    code, err, imported = run_blocked(tmp_path, "matplotlib", [*argv, "--plot", str(tmp_path)])
    assert_stopped_before_work(code, err, imported, "matplotlib")


@pytest.mark.slow  # about 13 s: a child process that builds the trie with the tiny tokenizer
def test_stats_without_plot_runs_without_matplotlib(tiny_assets, tmp_path: Path) -> None:
    data, model = tiny_assets
    argv = ["stats", "--data", str(data), "--model", str(model)]
    code, err, _ = run_blocked(tmp_path, "matplotlib", [*argv, "--out", str(tmp_path / "s.json")])
    assert code == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["catalog_items"] == 10


def test_demo_without_peft_stops_before_work(tmp_path: Path) -> None:
    code, err, imported = run_blocked(tmp_path, "peft", ["demo", "--out", str(tmp_path / "d")])
    line = assert_stopped_before_work(code, err, imported, "peft")
    assert "LoRA adapters" in line
    assert not (tmp_path / "d").exists()


def test_train_lora_without_peft_and_two_missing_at_once(tiny_assets, tmp_path: Path) -> None:
    data, model = tiny_assets
    argv = ["train", "--data", str(data), "--model", str(model), "--output-dir", "o"]
    code, err, imported = run_blocked(tmp_path, "peft", [*argv, "--lora-r", "4"])
    assert_stopped_before_work(code, err, imported, "peft")
    code, err, imported = run_blocked(tmp_path, "peft,accelerate", [*argv, "--lora-r", "4"])
    line = one_error_line(code, err)
    assert "'accelerate'" in line and "'peft'" in line and "pip install accelerate peft" in line
    assert not [m for m in imported if m.startswith(HEAVY)]


def test_experiment_without_matplotlib(tiny_assets, tmp_path: Path) -> None:
    data, model = tiny_assets
    argv = ["experiment", "--profile", "tiny", "--data", str(data), "--model", str(model)]
    code, err, imported = run_blocked(tmp_path, "matplotlib", [*argv, "--out", str(tmp_path / "x")])
    assert_stopped_before_work(code, err, imported, "matplotlib")
    assert not (tmp_path / "x").exists()


def test_smollm2_conversion_needs_gguf_only_when_not_cached(tmp_path: Path) -> None:
    empty_cache = tmp_path / "cache"
    argv = ["recommend", "--data", str(tmp_path), "--out", str(tmp_path / "r.csv")]
    code, err, imported = run_blocked(tmp_path, "gguf", argv, IGDBEAM_CACHE=str(empty_cache))
    line = assert_stopped_before_work(code, err, imported, "gguf")
    assert "converting the SmolLM2 GGUF file" in line


def _args(argv: list[str]) -> argparse.Namespace:
    from igdbeam.app.cli import build_parser

    return build_parser().parse_args(argv)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["prepare", "--out", "o"], []),
        (["stats", "--model", "m"], []),
        (["stats", "--model", "m", "--plot", "p"], ["matplotlib"]),
        (["train", "--model", "m", "--output-dir", "o"], ["accelerate"]),
        (["train", "--model", "m", "--output-dir", "o", "--lora-r", "2"], ["accelerate", "peft"]),
        (["recommend", "--model", "m", "--out", "r.csv"], ["accelerate"]),
        (["evaluate", "--model", "m", "--out", "o"], ["accelerate", "matplotlib"]),
        (["experiment", "--model", "m", "--out", "o"], ["accelerate", "matplotlib", "peft"]),
        (
            ["experiment", "--model", "m", "--out", "o", "--lora-r", "0"],
            ["accelerate", "matplotlib"],
        ),
        (
            ["experiment", "--model", "m", "--out", "o", "--report-only"],
            ["accelerate", "matplotlib"],
        ),
        (["experiment", "--model", "m", "--out", "o", "--baselines-only"], ["rectools"]),
    ],
)
def test_needed_packages_per_command(argv, expected) -> None:
    from igdbeam.app.cli.optional_packages import needed_packages

    assert needed_packages(_args(argv)) == expected


# ------------------------------------------------------------------ results before plots
def _broken_plot(*_args, **_kwargs):
    raise RuntimeError("matplotlib backend exploded")


def test_evaluate_plot_failure_keeps_the_results(
    tiny_assets, tmp_path: Path, capsys, monkeypatch
) -> None:
    from igdbeam.evaluation import analysis

    monkeypatch.setattr(analysis, "plot_entropy_curves", _broken_plot)
    data, model = tiny_assets
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        "--data",
        str(data),
        "--model",
        str(model),
        "--decoder",
        DECODER,
        "--include-history",
    ]
    code, stdout, err = run_cli(
        [*argv, "--no-progress", "--num-beams", "3", "--methods", "d3", "--out", str(out)], capsys
    )
    assert code == 1
    # (transformers prints its weight-loading bar on stderr too)
    lines = [x for x in err.strip().splitlines() if x.startswith("igdbeam")]
    assert "Traceback" not in err and len(lines) == 1
    assert lines[0].startswith("igdbeam: error: the results are in ")
    assert "entropy_by_step.png could not be drawn" in lines[0] and "exploded" in lines[0]
    assert "NDCG@10" in stdout  # the table was printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_rows"] == 6 and metrics["results"][0]["method"] == "d3"
    assert (out / "recommendations.csv").read_text().count("\n") == 1 + 6 * 3
    assert (out / "metrics.csv").is_file() and (out / ".igdbeam-output").is_file()
    assert not (out / "entropy_by_step.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # no temp folder left
    assert sorted(p.name for p in out.iterdir()) == [
        ".igdbeam-output",
        "metrics.csv",
        "metrics.json",
        "recommendations.csv",
        "report.md",
    ]


def test_stats_plot_failure_keeps_the_json(
    tiny_assets, tmp_path: Path, capsys, monkeypatch
) -> None:
    from igdbeam.evaluation import analysis

    monkeypatch.setattr(analysis, "plot_zero_ig_by_step", _broken_plot)
    data, model = tiny_assets
    stats_json, plots = tmp_path / "s.json", tmp_path / "plots"
    argv = ["stats", "--data", str(data), "--model", str(model), "--out", str(stats_json)]
    code, stdout, err = run_cli([*argv, "--plot", str(plots)], capsys)
    assert code == 1
    assert "written to" in err and "zero_ig_by_step.png could not be drawn" in err
    assert json.loads(stats_json.read_text())["splits"]["test"]["rows"] == 6
    assert "zero_ig_token_share" in stdout
    assert list(plots.iterdir()) == []  # no partial image, no temp file


@pytest.mark.slow  # about 6 s: two tiny adapters are written and decoded
def test_demo_plot_failure_keeps_the_results(tmp_path: Path, monkeypatch, capsys) -> None:
    """The demo writes results.json / .csv and recommendations.csv before any plot."""
    pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from factories.data import write_tiny_data
    from factories.models import write_tiny_model
    from igdbeam.app import assets, pipeline
    from igdbeam.app.demo import DemoProfile, run_demo
    from igdbeam.evaluation import analysis
    from test_demo import _write_adapter

    data = write_tiny_data(tmp_path / "data")
    model_dir = write_tiny_model(tmp_path / "model")

    def load(_name: str = "smollm2"):
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        tok.padding_side = "left"
        return AutoModelForCausalLM.from_pretrained(str(model_dir)).eval(), tok

    monkeypatch.setattr(pipeline, "prepare_movielens", lambda *a, **k: data)
    monkeypatch.setattr(assets, "smollm2_checkpoint", lambda **k: model_dir)
    monkeypatch.setattr(assets, "load_model_and_tokenizer", load)
    env = {
        name: _write_adapter(model_dir, tmp_path / name, k)
        for k, name in enumerate(("plain", "igd"))
    }
    monkeypatch.setattr(analysis, "plot_entropy_curves", _broken_plot)
    monkeypatch.setattr(analysis, "plot_zero_ig_by_step", _broken_plot)
    monkeypatch.setattr(analysis, "plot_cell_intervals", _broken_plot)
    prof = DemoProfile("t", num_users=2, num_beams=2, batch_size=2, time_budget_s=None)
    out = tmp_path / "demo"
    summary = run_demo(
        out, prof, progress=False, adapters={"plain": env["plain"], "igd": env["igd"]}
    )
    assert [f.split(" ")[0] for f in summary["plot_errors"]] == [
        "zero_ig_by_step.png",
        "entropy_by_step.png",
        "cells.png",
    ]
    assert "warning: zero_ig_by_step.png could not be drawn" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["num_rows"] == 2
    assert (out / "results.csv").is_file() and (out / "recommendations.csv").is_file()
    assert not list(out.glob("*.png")) and not list(out.glob(".*tmp*"))
