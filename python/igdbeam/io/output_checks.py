"""Output checks before any long work: may igdbeam write there, and is the folder writable?"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from igdbeam.io.fs import clean_leftovers
from igdbeam.io.markers import OutputPathError, dir_verdict, write_marker


def ensure_writable_dir(folder: str | os.PathLike[str]) -> list[Path]:
    """Create ``folder`` (and its parents) if needed and prove it writable with a temp file.

    Returns:
        the folders it created, outermost first (so a caller can remove them if it fails).

    Raises:
        NotADirectoryError: a component of the path is a file.
        OSError: the folder cannot be created or written (permissions, read-only file system).
    """
    folder = Path(folder)
    missing: list[Path] = []
    p = folder
    while not p.exists() and not p.is_symlink() and p != p.parent:
        missing.append(p)
        p = p.parent
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(
            f"cannot write in {str(folder)!r}: {str(p)!r} is a file, not a folder"
        )
    created: list[Path] = []
    try:
        for d in reversed(missing):
            d.mkdir(exist_ok=True)
            created.append(d)
        fd, tmp = tempfile.mkstemp(prefix=".igdbeam-write-test-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        remove_empty_dirs(created)
        reason = exc.strerror or str(exc)
        raise type(exc)(f"cannot write in {str(folder)!r}: {reason}") from None
    except BaseException:
        remove_empty_dirs(created)
        raise
    return created


def ensure_output_dir(folder: str | os.PathLike[str], command: str) -> Path:
    """Create ``folder`` if needed; a new or empty folder gets the marker of ``command``.

    A folder that already holds files is left as it is (with or without a marker).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.iterdir()):
        write_marker(folder, command)
    return folder


def remove_empty_dirs(folders: Sequence[Path]) -> None:
    """Remove the given folders, innermost first, where they are (still) empty."""
    for d in reversed(list(folders)):
        with suppress(OSError):
            d.rmdir()


def check_output_dir(
    path: str | os.PathLike[str],
    command: str,
    *,
    overwrite: bool = False,
    option: str = "--out",
) -> list[Path]:
    """Check before any work that ``igdbeam <command>`` may write the output folder ``path``.

    The folder may be absent, empty, or (with ``overwrite``) an earlier output of the same
    command; its parent is created if needed and must be writable.

    Returns:
        the parent folders created (see :func:`ensure_writable_dir`).

    Raises:
        OutputPathError: a file, a link, a folder without the igdbeam marker, another command's
            output, or an existing output without ``overwrite``.
        OSError: the parent folder cannot be created or written.
    """
    target = Path(path)
    clean_leftovers(target)  # what a killed earlier run left does not count
    dir_verdict(target, command, overwrite, option)
    return ensure_writable_dir(target.absolute().parent)


def check_output_file(
    path: str | os.PathLike[str], *, overwrite: bool = False, option: str = "--out"
) -> list[Path]:
    """Check before any work that the output file ``path`` may be written.

    An existing file is replaced only with ``overwrite``; a folder is never replaced. The file's
    folder is created if needed and must be writable.

    Returns:
        the folders created (see :func:`ensure_writable_dir`).
    """
    target = Path(path)
    clean_leftovers(target)
    name = str(target)
    if target.is_dir():
        raise OutputPathError(f"{option} {name!r} is a folder; {option} names a file")
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise OutputPathError(f"{option} {name!r} already exists; pass --overwrite to replace it")
    return ensure_writable_dir(target.absolute().parent)
