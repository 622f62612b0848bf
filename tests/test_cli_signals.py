"""SIGINT / SIGTERM during a CLI run: the run cleans up its temp outputs, keeps the earlier
output intact, prints ``igdbeam: interrupted`` and exits 130 / 143."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from factories.cli import run_cli, snapshot_tree, subprocess_env

WRAPPER = """\
import os, signal, sys, time
from pathlib import Path

signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job may inherit SIG_IGN
if os.environ.get("TEST_RECBOLE"):
    import igdbeam.app.assets
    import igdbeam.data.bigrec_csv as bigrec

    igdbeam.app.assets.asset_path = lambda name, **_: Path(os.environ["TEST_RECBOLE"])
    write_split = bigrec._write_split

    def slow_write_split(path, samples):  # pause inside the temp folder, mid-write
        n = write_split(path, samples)
        print("WRITING", flush=True)
        time.sleep(300)
        return n

    bigrec._write_split = slow_write_split
from igdbeam.app.cli import main

sys.exit(main(sys.argv[1:]))
"""

SLOW_DECODER = """\
import time


def generate(*args, **kwargs):
    print("DECODING", flush=True)
    time.sleep(300)
    raise AssertionError("not interrupted")
"""


def _run_and_signal(
    tmp_path: Path, argv: list[str], ready: str, sig: int, env_extra: dict[str, str]
) -> tuple[int, str, list[str]]:
    """Start the CLI in a subprocess, wait for the line ``ready``, send ``sig``; return the exit
    status, stderr and the hidden entries of ``tmp_path`` seen while it was paused."""
    (tmp_path / "wrapper.py").write_text(WRAPPER)
    (tmp_path / "slow_decoder.py").write_text(SLOW_DECODER)
    env = subprocess_env(tmp_path, OMP_NUM_THREADS="1", **env_extra)
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "wrapper.py"), *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 400
        seen = ""
        while ready not in seen:
            left = deadline - time.monotonic()
            assert left > 0 and proc.poll() is None, proc.stderr.read() if proc.poll() else seen
            if select.select([proc.stdout], [], [], min(left, 5))[0]:
                seen += proc.stdout.readline()
        hidden = [p.name for p in Path(argv[argv.index("--out") + 1]).parent.iterdir()]
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err, [h for h in hidden if h.startswith(".")]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_prepare_cleans_up(recbole, tmp_path: Path, sig: int, capsys):
    work = tmp_path / "work"
    work.mkdir()
    out = work / "ml"
    assert run_cli(["prepare", "--out", str(out), "--no-progress"], capsys)[0] == 0
    before = snapshot_tree(work)
    argv = ["prepare", "--out", str(out), "--overwrite", "--max-history", "2", "--no-progress"]
    code, err, hidden = _run_and_signal(
        tmp_path, argv, "WRITING", sig, {"TEST_RECBOLE": str(recbole)}
    )
    assert any(h.startswith(".ml.tmp-") for h in hidden)  # it was stopped mid-write
    assert code == 128 + sig
    assert err.strip().splitlines() == ["igdbeam: interrupted"], err
    assert snapshot_tree(work) == before  # the earlier output intact, the temp folder gone


@pytest.mark.slow
def test_sigterm_during_recommend_keeps_previous_output(tiny_assets, tmp_path: Path):
    data, model = tiny_assets
    work = tmp_path / "work"
    work.mkdir()
    (work / "recs.csv").write_text("previous csv\n")
    (work / "recs.json").write_text('{"previous": true}\n')
    before = snapshot_tree(work)
    argv = [
        "recommend", "--data", str(data), "--model", str(model), "--decoder",
        "slow_decoder:generate", "--out", str(work / "recs.csv"), "--overwrite", "--no-progress",
    ]  # fmt: skip
    code, err, _ = _run_and_signal(tmp_path, argv, "DECODING", signal.SIGTERM, {})
    assert code == 143
    assert err.strip().splitlines()[-1] == "igdbeam: interrupted" and "Traceback" not in err
    assert snapshot_tree(work) == before
