"""Concurrent saves of different tries to one path: the file left behind is one writer's trie,
whole; readers during the saves only ever see whole tries; failed saves leave nothing behind."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from igdbeam import ItemTrie
from igdbeam.trie import file_format as trie_io


def writer_tries() -> list[ItemTrie]:
    """Tries that a mixed file could pass for: same shape and sizes, different weights (the same
    arrays except the float ones), plus tries of other shapes."""
    rng = np.random.default_rng(7)
    paths = [
        [int(t) for t in rng.integers(3, 60, size=int(rng.integers(2, 7)))] + [2]
        for _ in range(400)
    ]
    same_shape = [
        ItemTrie.from_token_ids(
            paths, rng.integers(1, 50, size=len(paths)).astype(float), vocab_size=64
        )
        for _ in range(3)
    ]
    other = ItemTrie.from_token_ids(paths[:150], vocab_size=64, entropy="conditional")
    return [*same_shape, other]


def which(trie: ItemTrie, candidates: list[ItemTrie]) -> int:
    """Index of the candidate equal to ``trie`` in every array and in its metadata, else -1."""
    for i, c in enumerate(candidates):
        if c.meta == trie.meta and all(
            c.array(name).shape == arr.shape and torch.equal(c.array(name), arr)
            for name, arr in trie.arrays().items()
        ):
            return i
    return -1


def leftovers(folder: Path, keep: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


def test_threads_saving_one_path_leave_one_whole_trie(tmp_path: Path) -> None:
    tries = writer_tries()
    assert len({which(t, tries) for t in tries}) == len(tries)  # all distinct
    path = tmp_path / "shared.igdtrie"
    tries[0].save(path)
    rounds = 12
    errors: list[BaseException] = []
    seen: set[int] = set()
    start = threading.Barrier(len(tries) + 1)
    writers_done = threading.Event()

    def write(trie: ItemTrie) -> None:
        try:
            start.wait()
            for _ in range(rounds):
                trie.save(path)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def read() -> None:
        try:
            start.wait()
            while not writers_done.is_set():
                for mmap in (True, False):
                    got = which(ItemTrie.load(path, mmap=mmap), tries)
                    assert got >= 0, "a reader saw a trie that no writer saved"
                    seen.add(got)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in tries]
    reader = threading.Thread(target=read)
    for t in [*threads, reader]:
        t.start()
    for t in threads:
        t.join()
    writers_done.set()
    reader.join()
    assert not errors, errors
    assert seen
    assert which(ItemTrie.load(path), tries) >= 0
    assert leftovers(tmp_path, path.name) == []  # no temporary file left behind


def _save_many(
    trie: ItemTrie, path: str, rounds: int, go: multiprocessing.synchronize.Event
) -> None:
    go.wait()
    for _ in range(rounds):
        trie.save(path)


def test_processes_saving_one_path_leave_one_whole_trie(tmp_path: Path) -> None:
    tries = writer_tries()
    path = tmp_path / "shared.igdtrie"
    # fork: the children inherit the tries and the imported igdbeam (no seconds-long import).
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    procs = [ctx.Process(target=_save_many, args=(t, str(path), 10, go)) for t in tries]
    for p in procs:
        p.start()
    go.set()
    seen: set[int] = set()
    while any(p.is_alive() for p in procs):
        if path.exists():
            got = which(ItemTrie.load(path, mmap=False), tries)
            assert got >= 0, "a reader saw a trie that no writer saved"
            seen.add(got)
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert which(ItemTrie.load(path), tries) >= 0
    assert leftovers(tmp_path, path.name) == []


def test_failed_save_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = writer_tries()[:2]
    path = tmp_path / "t.igdtrie"
    old.save(path)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(trie_io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        new.save(path)
    monkeypatch.undo()
    assert which(ItemTrie.load(path), [old]) == 0
    assert leftovers(tmp_path, path.name) == []

    # A failure after the temporary file exists but before the rename also cleans up.
    def broken_fsync(fd: int) -> None:
        raise OSError("fsync failed")

    monkeypatch.setattr(trie_io.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="fsync failed"):
        new.save(path)
    monkeypatch.undo()
    assert which(ItemTrie.load(path), [old]) == 0
    assert leftovers(tmp_path, path.name) == []


def test_save_into_a_missing_folder_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        writer_tries()[3].save(tmp_path / "missing" / "t.igdtrie")
    assert list(tmp_path.iterdir()) == []


def test_saved_file_has_the_usual_permissions(tmp_path: Path) -> None:
    # Not mkstemp's private 0600: what open() would have created (0666 minus the umask).
    umask = os.umask(0o022)
    os.umask(umask)
    path = tmp_path / "t.igdtrie"
    writer_tries()[3].save(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
