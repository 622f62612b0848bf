"""What a run killed with SIGKILL leaves (temporary files and folders, an output moved aside, a
folder filled in place) is cleaned up or put back by the next run, and never blocks it; the
names of writers that still run are left alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from factories.cli import snapshot_tree, subprocess_env
from igdbeam.io import (
    MARKER_NAME,
    OutputPathError,
    atomic_dir,
    check_output_dir,
    staged_dir,
    write_json,
)
from igdbeam.io.fs import clean_leftovers, writer_prefix


def killed_mid_write(code: str, tmp_path: Path) -> None:
    """Run ``code`` in a child that prints 'ready' when it is inside the write, then SIGKILL it
    (no clean-up of any kind can run)."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert child.stdout is not None
    with child.stdout:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL


def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_file_leftover_is_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    killed_mid_write(
        f"""
        import time
        from igdbeam.io import atomic_open
        with atomic_open({str(target)!r}, "w") as fh:
            fh.write('{{"half": ')
            fh.flush()
            print("ready", flush=True)
            time.sleep(600)
        """,
        tmp_path,
    )
    [left] = hidden(tmp_path)
    assert left.startswith(".metrics.json.tmp-") and left.endswith(".tmp")
    assert not target.exists()
    write_json(target, {"rows": 3})
    assert json.loads(target.read_text()) == {"rows": 3}
    assert hidden(tmp_path) == []


def test_atomic_dir_leftover_is_removed_before_the_output_check(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    killed_mid_write(
        f"""
        import time
        from pathlib import Path
        from igdbeam.io import atomic_dir
        with atomic_dir(Path({str(out)!r}), command="evaluate") as tmp:
            (tmp / "metrics.json").write_text("{{}}")
            print("ready", flush=True)
            time.sleep(600)
        """,
        tmp_path,
    )
    [left] = hidden(tmp_path)
    assert left.startswith(".eval.tmp-") and (tmp_path / left / "metrics.json").is_file()
    check_output_dir(out, "evaluate")
    assert hidden(tmp_path) == [] and not out.exists()
    with atomic_dir(out, command="evaluate") as tmp:
        (tmp / "metrics.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == [MARKER_NAME, "metrics.json"]


def test_staged_dir_killed_mid_run_puts_the_previous_output_back(tmp_path: Path) -> None:
    """The demo fills its folder in place: a killed run leaves a half folder (marked
    unfinished) and the previous output moved aside; the next run restores the previous one."""
    out = tmp_path / "demo"
    with staged_dir(out, "demo") as folder:
        (folder / "results.json").write_text('{"run": 1}')
    before = snapshot_tree(out)
    killed_mid_write(
        f"""
        import time
        from pathlib import Path
        from igdbeam.io import staged_dir
        with staged_dir(Path({str(out)!r}), "demo", overwrite=True) as folder:
            (folder / "results.json").write_text('{{"run": 2, "half')
            print("ready", flush=True)
            time.sleep(600)
        """,
        tmp_path,
    )
    assert json.loads((out / MARKER_NAME).read_text())["writer"]  # unfinished
    assert [h for h in hidden(tmp_path) if h.startswith(".demo.old-")]
    # Without --overwrite the restored earlier output is refused like any finished output.
    with pytest.raises(OutputPathError, match="already exists; pass --overwrite"):
        check_output_dir(out, "demo")
    assert snapshot_tree(out) == before and hidden(tmp_path) == []
    with staged_dir(out, "demo", overwrite=True) as folder:
        (folder / "results.json").write_text('{"run": 3}')
    assert json.loads((out / "results.json").read_text()) == {"run": 3}
    assert "writer" not in json.loads((out / MARKER_NAME).read_text())  # finished


def test_output_moved_aside_by_a_killed_swap_is_restored(tmp_path: Path) -> None:
    """``atomic_dir`` replaces an output by renaming it aside first; killed right after that
    rename, the output would be gone: the next run renames it back."""
    out = tmp_path / "eval"
    with atomic_dir(out, command="evaluate") as tmp:
        (tmp / "metrics.json").write_text('{"old": true}')
    before = snapshot_tree(out)
    aside = tmp_path / f".eval.old-{dead_pid()}-{writer_prefix(out).split('-')[2]}-abc123"
    os.rename(out, aside)
    assert clean_leftovers(out) == [aside]
    assert snapshot_tree(out) == before and hidden(tmp_path) == []


def test_trie_save_removes_a_killed_save_temp_file(tmp_path: Path) -> None:
    from igdbeam import ItemTrie

    target = tmp_path / "catalog.igdtrie"
    prefix = writer_prefix(target).replace(f"-{os.getpid()}-", f"-{dead_pid()}-")
    (tmp_path / f"{prefix}zz9.tmp").write_bytes(b"IGDTRIE\0half")
    trie = ItemTrie.from_token_ids([[1, 2], [3, 2]])
    trie.save(target)
    assert hidden(tmp_path) == []
    assert ItemTrie.load(target).num_items == 2


def test_live_writers_and_other_hosts_are_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "t.json"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = [
            writer_prefix(target) + "mine.tmp",  # this process
            writer_prefix(target).replace(f"-{os.getpid()}-", f"-{live.pid}-") + "live.tmp",
            f".t.json.tmp-{dead_pid()}-00000000-otherhost.tmp",  # another host's (same pid)
            ".t.json.unrelated",
            ".other.json.tmp-1-00000000-x.tmp",
        ]
        for name in names:
            (tmp_path / name).write_text("x")
        assert clean_leftovers(target) == []
        assert hidden(tmp_path) == sorted(names)
    finally:
        live.kill()
        live.wait()
    # Once the writer has exited, its temp file is a leftover.
    assert [p.name for p in clean_leftovers(target)] == [names[1]]
