"""Atomic file writes: a temp file next to the target, fsynced, then renamed into place.

Temporary names carry the writer's pid (``.<name>.tmp-<pid>-<host>-*``): each write first
removes what a killed earlier writer of the same target left
(:func:`~igdbeam.io.fs.clean_leftovers`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from igdbeam.io.fs import (
    clean_leftovers,
    current_umask,
    fsync_dir,
    fsync_file,
    writer_prefix,
)


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a uniquely named temp file next to ``path``; if the block succeeds it is flushed,
    fsynced and renamed over ``path``, otherwise removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target)
    fd, tmp = tempfile.mkstemp(prefix=writer_prefix(target), suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a unique temp path next to ``path`` (same suffix) for a writer that takes a path
    (e.g. ``savefig``); on success it is fsynced and renamed over ``path``, otherwise removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target)
    fd, tmp = tempfile.mkstemp(
        prefix=writer_prefix(target), suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        fsync_file(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
