"""History exclusion is on by default for MovieLens data and off for other folders; the flags
override the default either way."""

from __future__ import annotations

import argparse

import pytest

from igdbeam.app.cli.loading import exclude_history
from igdbeam.app.cli.parser import build_parser
from igdbeam.io import write_marker


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["evaluate", *argv])


@pytest.mark.parametrize(
    ("flags", "expected"),
    [((), True), (("--include-history",), False), (("--exclude-history",), True)],
)
def test_builtin_movielens(flags: tuple[str, ...], expected: bool) -> None:
    assert exclude_history(_args("--dataset", "ml-100k", "--out", "x", *flags)) is expected


def test_folders(tmp_path) -> None:
    prepared, other = tmp_path / "prepared", tmp_path / "other"
    prepared.mkdir()
    other.mkdir()
    write_marker(prepared, "prepare")
    assert exclude_history(_args("--data", str(prepared), "--out", "x")) is True
    assert exclude_history(_args("--data", str(other), "--out", "x")) is False
    assert exclude_history(_args("--data", str(other), "--out", "x", "--exclude-history")) is True
    assert (
        exclude_history(_args("--data", str(prepared), "--out", "x", "--include-history")) is False
    )


def test_flags_are_exclusive(capsys) -> None:
    with pytest.raises(SystemExit) as err:
        _args("--out", "x", "--exclude-history", "--include-history")
    assert err.value.code == 2
    assert "not allowed with" in capsys.readouterr().err
