"""Atomic output folders: built next to the target and renamed into place, or filled in place
with rollback."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from igdbeam.io.fs import (
    clean_leftovers,
    fsync_dir,
    fsync_tree,
    public_dir,
    rmtree_fully,
    unique_sibling,
    writer_prefix,
)
from igdbeam.io.markers import OutputPathError, dir_verdict, read_marker, write_marker


def _swap_in(tmp: Path, target: Path) -> None:
    """Rename the complete folder ``tmp`` to ``target``, moving an existing ``target`` aside
    first and deleting it afterwards; on failure the old ``target`` is put back."""
    olds: list[Path] = []
    try:
        for _attempt in range(5):
            if target.exists() or target.is_symlink():
                olds.append(unique_sibling(target, "old"))
                os.rename(target, olds[-1])
            try:
                os.rename(tmp, target)
                break
            except OSError:
                # Another writer put a folder at ``target`` meanwhile: move that aside as well.
                if not target.exists():
                    raise
        else:  # pragma: no cover - five concurrent writers in a row
            raise FileExistsError(f"{str(target)!r} keeps being recreated by another writer")
    except BaseException:
        if olds and olds[0].exists() and not (target.exists() or target.is_symlink()):
            os.rename(olds[0], target)
        raise
    fsync_dir(target.parent)
    for old in olds:
        if old.exists():
            rmtree_fully(old)


@contextmanager
def atomic_dir(
    target: str | os.PathLike[str],
    *,
    command: str | None = None,
    overwrite: bool = False,
    require_marker: bool = True,
    option: str = "output folder",
) -> Iterator[Path]:
    """Build a folder in a unique temp folder next to ``target`` and rename it into place.

    The block writes into the yielded folder. On success the marker of ``command`` is added (when
    given), every file is fsynced and the folder replaces ``target``; on any exception the temp
    folder is removed and ``target`` is untouched.

    Args:
        target: the folder to create or replace.
        command: the igdbeam command whose output this is (written as the marker).
        overwrite: replace an existing ``target``.
        require_marker: replace only an empty folder or one with the marker of ``command``
            (the rule for user-named outputs); False replaces any folder (with ``overwrite``).
        option: how error messages name the path (e.g. ``--out``).

    Raises:
        OutputPathError: ``target`` may not be replaced (checked before and after the block).
    """
    target = Path(target)

    def verdict() -> None:
        if require_marker:
            dir_verdict(target, command, overwrite, option)
        elif target.is_symlink() or (target.exists() and not target.is_dir()):
            raise OutputPathError(f"{option} {str(target)!r} exists and is not a folder")
        elif target.exists() and not overwrite:
            raise OutputPathError(f"{option} {str(target)!r} already exists")

    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target)  # a killed earlier run's temp folder, or its output moved aside
    verdict()
    tmp = Path(tempfile.mkdtemp(prefix=writer_prefix(target), dir=target.parent))
    try:
        public_dir(tmp)
        yield tmp
        if command is not None:
            write_marker(tmp, command)
        fsync_tree(tmp)
        verdict()  # the long work may have given someone time to put something there
        _swap_in(tmp, target)
    except BaseException:
        rmtree_fully(tmp)
        raise


@contextmanager
def staged_dir(
    target: str | os.PathLike[str],
    command: str,
    *,
    overwrite: bool = False,
    option: str = "--out",
) -> Iterator[Path]:
    """Let a writer that needs the final path fill ``target`` in place, with rollback.

    For code that prints or records its output path. An existing ``target`` (empty, or marked
    by ``command`` with ``overwrite``) is moved aside to a unique hidden name, a fresh marked
    folder is created and yielded. On success the old folder is deleted; on any exception the
    new folder is deleted and the old one put back, so the previous output stays intact.
    """
    target = Path(target)
    if target.parent.is_dir():
        clean_leftovers(target)  # a killed earlier run: its unfinished folder, the old output
    dir_verdict(target, command, overwrite, option)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = unique_sibling(target, "old")
    try:
        if target.exists():
            os.rename(target, old)
        target.mkdir()
        # Marked unfinished (with this process as the writer) until the block succeeds: if
        # this process is killed, the next run removes the folder and puts ``old`` back.
        write_marker(target, command, unfinished=True)
        yield target
        write_marker(target, command)
    except BaseException:
        if target.is_dir() and (
            not any(target.iterdir()) or (read_marker(target) or {}).get("command") == command
        ):
            rmtree_fully(target)
        if old.exists() and not target.exists():
            os.rename(old, target)
        raise
    if old.exists():
        rmtree_fully(old)
