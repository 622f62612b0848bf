"""Running the igdbeam CLI in tests: in-process runs, subprocess environments, output checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
# The test double of igdbeam.generate (tests/hf_generate.py). It has no item filters, so the
# commands that use it pass --include-history (history exclusion is on by default for folders
# written by ``igdbeam prepare``).
DECODER = "hf_generate:hf_generate"


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``igdbeam <argv>`` in this process; return the exit status, stdout and stderr."""
    from igdbeam.app.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def subprocess_env(*paths: Path | str, **extra: str) -> dict[str, str]:
    """This process's environment for a child Python that imports the igdbeam this test
    imported (installed, or python/ with a dev build), tests/ and ``paths``; plus ``extra``."""
    import igdbeam

    package_parent = str(Path(igdbeam.__file__).resolve().parents[1])
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([package_parent, str(TESTS), *map(str, paths)])
    return env


def one_error_line(code: int, err: str) -> str:
    """Assert exit status 2 and exactly one stderr line 'igdbeam: error: ...'; return it."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("igdbeam: error: "), err
    return lines[0]


def snapshot_tree(path: Path) -> dict[str, bytes | None]:
    """Every entry under ``path`` (the path itself included): file bytes, None for folders."""
    if not path.exists():
        return {}
    if path.is_file():
        return {".": path.read_bytes()}
    snap: dict[str, bytes | None] = {".": None}
    for p in sorted(path.rglob("*")):
        snap[str(p.relative_to(path))] = p.read_bytes() if p.is_file() else None
    return snap
