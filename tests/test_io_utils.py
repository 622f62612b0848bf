"""Atomic JSON / CSV writers, atomic folders, the output marker and the output checks."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

import igdbeam
from igdbeam.io import (
    MARKER_NAME,
    OutputPathError,
    atomic_dir,
    atomic_open,
    check_output_dir,
    check_output_file,
    read_marker,
    remove_empty_dirs,
    staged_dir,
    write_csv,
    write_json,
)


def test_json_and_csv(tmp_path: Path) -> None:
    p = write_json(tmp_path / "a" / "r.json", {"x": np.float32(0.5), "y": [math.nan], "z": (1,)})
    assert json.loads(p.read_text()) == {"x": 0.5, "y": [None], "z": [1]}
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask
    q = write_csv(tmp_path / "r.csv", [{"a": 1, "b": 2}, {"a": 3, "c": 4}])
    with q.open() as fh:
        assert list(csv.DictReader(fh)) == [
            {"a": "1", "b": "2", "c": ""},
            {"a": "3", "b": "", "c": "4"},
        ]


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_open_fsyncs_and_uses_unique_temp_names(tmp_path: Path, monkeypatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    target = tmp_path / "out.json"
    # Two writers of the same file at once (two runs): each has its own temp file.
    with atomic_open(target) as a, atomic_open(target) as b:
        temps = sorted(p.name for p in tmp_path.iterdir())
        assert len(temps) == 2 and all(t.startswith(".out.json.") for t in temps)
        a.write("first")
        b.write("second")
    assert target.read_text() == "first"  # the outer block finished last
    assert synced  # flushed and fsynced before the rename
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_dir_marker_and_overwrite_rules(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out, command="evaluate") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-")
        (tmp / "a.txt").write_text("1")
    assert read_marker(out) == {"command": "evaluate", "version": igdbeam.__version__}
    with (
        pytest.raises(OutputPathError, match="already exists; pass --overwrite"),
        atomic_dir(out, command="evaluate"),
    ):
        pytest.fail("the check comes before the block")
    with (
        pytest.raises(OutputPathError, match="holds the output of 'igdbeam evaluate'"),
        atomic_dir(out, command="prepare", overwrite=True),
    ):
        pass
    with atomic_dir(out, command="evaluate", overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [MARKER_NAME, "b.txt"]

    # A user's folder or file is never replaced, and nothing is written into it.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes").write_text("keep")
    afile = tmp_path / "afile"
    afile.write_text("keep")
    for target, message in ((mine, "igdbeam did not create"), (afile, "is a file")):
        with (
            pytest.raises(OutputPathError, match=message),
            atomic_dir(target, command="evaluate", overwrite=True),
        ):
            pass
    assert [p.name for p in mine.iterdir()] == ["notes"] and afile.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "mine", "out"]


def test_atomic_dir_interrupted_keeps_the_old_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out, command="prepare") as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_dir(out, command="prepare", overwrite=True) as t:
        (t / "a.txt").write_text("half")
        raise KeyboardInterrupt
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_two_overlapping_saves_of_one_folder(tmp_path: Path) -> None:
    """Two runs saving ``run/model`` at once (the train_model save block) never share a temp
    folder: both complete, the last one wins, nothing is left behind."""
    target = tmp_path / "model"
    with (
        atomic_dir(target, overwrite=True, require_marker=False) as a,
        atomic_dir(target, overwrite=True, require_marker=False) as b,
    ):
        assert a != b
        (a / "w").write_text("a")
        (b / "w").write_text("b")
    assert (target / "w").read_text() == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_staged_dir_rolls_back(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    with staged_dir(out, "demo") as d:
        assert d == out and read_marker(out)["command"] == "demo"
        (out / "r.json").write_text("first")
    with pytest.raises(ValueError), staged_dir(out, "demo", overwrite=True):
        (out / "r.json").write_text("half")
        raise ValueError("decoder failed")
    assert (out / "r.json").read_text() == "first"
    with staged_dir(out, "demo", overwrite=True):
        (out / "r.json").write_text("second")
    assert (out / "r.json").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_output_checks(tmp_path: Path) -> None:
    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match="'.*f' is a file, not a folder"):
        check_output_file(blocker / "sub" / "out.csv")
    with pytest.raises(NotADirectoryError):
        check_output_dir(blocker / "out", "evaluate")
    with pytest.raises(OutputPathError, match="already exists; pass --overwrite"):
        check_output_file(blocker)
    with pytest.raises(OutputPathError, match="is a folder"):
        check_output_file(tmp_path, overwrite=True)
    assert check_output_file(blocker, overwrite=True) == []
    created = check_output_dir(tmp_path / "a" / "b" / "out", "evaluate")
    assert created == [tmp_path / "a", tmp_path / "a" / "b"]
    remove_empty_dirs(created)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
