"""Durable file-system primitives of the atomic outputs: fsync, umask, removal, temp names."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
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
    """A unique hidden name next to ``target``: ``.<name>.<tag>-<writer>-<random>`` (see
    :func:`writer_prefix`)."""
    return target.parent / f"{writer_prefix(target, tag)}{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------ leftovers of killed runs
_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
LEFTOVER_KINDS = ("tmp", "old")
"""``tmp``: a temporary file or folder being written; ``old``: an output moved aside."""
_WRITER = re.compile(r"(?P<pid>[0-9]+)-(?P<host>[0-9a-f]{8})-")


def writer_tag() -> str:
    """``<pid>-<host hash>``: who writes a temporary name (so a later run can tell whether the
    writer is still alive)."""
    return f"{os.getpid()}-{_HOST}"


def writer_prefix(target: Path, kind: str = "tmp") -> str:
    """The name prefix of a temporary (``kind="tmp"``) or moved-aside (``"old"``) sibling of
    ``target``: ``.<name>.<kind>-<pid>-<host hash>-``; the caller appends a random part."""
    return f".{target.name}.{kind}-{writer_tag()}-"


def writer_alive(tag: str) -> bool:
    """Whether the writer ``<pid>-<host hash>`` may still be running.

    A writer on another host (a shared file system) is always presumed alive: only this host's
    processes can be checked.
    """
    match = _WRITER.match(tag + "-")
    if match is None or match["host"] != _HOST:
        return True
    pid = int(match["pid"])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or a pid this system cannot have: keep it
    return True


def _leftover_kind(entry: str, target: Path) -> str | None:
    """``"tmp"`` / ``"old"`` when ``entry`` is a sibling name of ``target`` left by a writer of
    this host that is no longer running, else None."""
    for kind in LEFTOVER_KINDS:
        head = f".{target.name}.{kind}-"
        if entry.startswith(head):
            match = _WRITER.match(entry[len(head) :])
            if match is not None and not writer_alive(f"{match['pid']}-{match['host']}"):
                return kind
    return None


def remove_path(path: Path) -> None:
    """Remove a file, link or folder tree; missing is fine."""
    if path.is_dir() and not path.is_symlink():
        rmtree_fully(path)
    else:
        with suppress(FileNotFoundError):
            path.unlink()


MARKER_NAME = ".igdbeam-output"  # the marker file of an igdbeam output folder (io.markers)


def unfinished_by_dead_writer(folder: str | os.PathLike[str]) -> bool:
    """True when ``folder``'s marker names a writer that never finished and no longer runs."""
    if Path(folder).is_symlink():
        return False
    try:
        marker = json.loads((Path(folder) / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    writer = marker.get("writer") if isinstance(marker, dict) else None
    return isinstance(writer, str) and not writer_alive(writer)


def clean_leftovers(target: str | os.PathLike[str]) -> list[Path]:
    """Remove what a killed writer of ``target`` left next to it, and put a moved-aside output
    back where the writer died before the new one was in place.

    A run killed with SIGKILL (or a power loss) runs no clean-up: it can leave a temporary file
    or folder (``.<name>.tmp-<pid>-<host>-*``) and, when it was replacing an output, the old
    output moved aside (``.<name>.old-<pid>-<host>-*``). Only names of writers of this host
    whose process no longer exists are touched; live writers and other hosts' names are left
    alone. A moved-aside output is renamed back to ``target`` when ``target`` does not exist
    (the replacement never happened), and removed otherwise. A folder filled in place by
    :func:`~igdbeam.io.atomic_dirs.staged_dir` whose marker says its writer died before it
    finished is removed first (then the output it replaced is put back).

    Returns:
        the leftovers removed or restored (their old names).
    """
    target = Path(target)
    try:
        entries = [e.name for e in os.scandir(target.parent)]
    except OSError:
        return []
    found = [(name, _leftover_kind(name, target)) for name in entries]
    done: list[Path] = []
    olds: list[Path] = []
    for name, kind in found:
        path = target.parent / name
        if kind == "tmp":
            with suppress(OSError):
                remove_path(path)
                done.append(path)
        elif kind == "old":
            olds.append(path)
    if (olds or target.is_dir()) and unfinished_by_dead_writer(target):
        with suppress(OSError):
            rmtree_fully(target)
            done.append(target)
    for old in sorted(olds, key=_mtime, reverse=True):
        with suppress(OSError):
            if not (target.exists() or target.is_symlink()):
                os.rename(old, target)
            else:
                remove_path(old)
            done.append(old)
    return done


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0


def public_dir(path: Path) -> None:
    """Give a ``mkdtemp`` folder (mode 0700) the permissions of a normal folder (umask)."""
    path.chmod(0o777 & ~current_umask())
