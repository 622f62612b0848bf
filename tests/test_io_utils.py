"""Atomic JSON / CSV writers."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from igdbeam.io_utils import atomic_open, write_csv, write_json


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
