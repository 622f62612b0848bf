"""Durable file-system primitives of the atomic outputs: fsync, umask, removal, temp names."""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import suppress
from pathlib import Path


def current_umask() -> int:
    """The process umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file's contents to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Persist a folder's entries (renames); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every regular file below ``root`` and every folder, deepest first."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                fsync_file(p)
        fsync_dir(dirpath)


def rmtree_fully(path: Path) -> None:
    """Remove a folder even if an interrupt arrives meanwhile (the CLI's signal handler raises
    once and ignores later signals, so the second attempt completes)."""
    try:
        shutil.rmtree(path, ignore_errors=True)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def unique_sibling(target: Path, tag: str) -> Path:
    """A unique hidden name next to ``target`` (``.<name>.<tag>-<random>``)."""
    return target.parent / f".{target.name}.{tag}-{uuid.uuid4().hex[:12]}"


def public_dir(path: Path) -> None:
    """Give a ``mkdtemp`` folder (mode 0700) the permissions of a normal folder (umask)."""
    path.chmod(0o777 & ~current_umask())
