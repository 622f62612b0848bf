"""Atomic outputs: a file or folder is either complete or absent, never half-written.

Every write goes to a temporary name that is unique (``tempfile``) and lies in the destination
folder, is flushed and fsynced, and is renamed into place only when it is complete; on any
exception, ``KeyboardInterrupt`` included, the temporary file or folder is removed and an
existing output stays as it was.

Output folders igdbeam creates carry a marker file, :data:`MARKER_NAME`, with the JSON
``{"command": ..., "version": ...}``. igdbeam replaces a folder only when it carries the marker of
the same command (and the caller asked to overwrite), so a folder of the user's is never deleted
or written into. :func:`check_output_dir` and :func:`check_output_file` apply these rules before
any long work and prove that the destination is writable.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

MARKER_NAME = ".igdbeam-output"


class OutputPathError(FileExistsError):
    """An output path igdbeam will not write: a user's file or folder, or an output that exists
    when overwriting was not asked for. The message names the path and the way out."""


# ----------------------------------------------------------------------------------- low level
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str | os.PathLike[str]) -> None:
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


def _fsync_tree(root: Path) -> None:
    """fsync every regular file below ``root`` and every folder, deepest first."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                _fsync_file(p)
        _fsync_dir(dirpath)


def _rmtree_fully(path: Path) -> None:
    """Remove a folder even if an interrupt arrives meanwhile (the CLI's signal handler raises
    once and ignores later signals, so the second attempt completes)."""
    try:
        shutil.rmtree(path, ignore_errors=True)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def _unique_sibling(target: Path, tag: str) -> Path:
    return target.parent / f".{target.name}.{tag}-{uuid.uuid4().hex[:12]}"


# -------------------------------------------------------------------------------- the marker
def read_marker(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of an igdbeam output folder, or None when the folder has none (or a bad one)."""
    p = Path(folder) / MARKER_NAME
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("command"), str) else None


def write_marker(folder: str | os.PathLike[str], command: str) -> Path:
    """Mark ``folder`` as the output of ``igdbeam <command>`` (atomically)."""
    from igdbeam import __version__

    path = Path(folder) / MARKER_NAME
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump({"command": command, "version": __version__}, fh)
        fh.write("\n")
    return path


def _dir_verdict(target: Path, command: str | None, overwrite: bool, option: str) -> None:
    """Raise :class:`OutputPathError` unless igdbeam may create or replace the folder ``target``.

    Allowed: nothing there, an empty folder, or (with ``overwrite``) a folder whose marker names
    ``command`` (any command when ``command`` is None).
    """
    name = str(target)
    if target.is_symlink():
        raise OutputPathError(
            f"{option} {name!r} is a symbolic link; igdbeam does not replace it "
            f"(choose another {option})"
        )
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputPathError(
            f"{option} {name!r} is a file, not an igdbeam output folder; igdbeam never replaces "
            f"it (choose another {option})"
        )
    if not any(target.iterdir()):
        return
    marker = read_marker(target)
    if marker is None:
        raise OutputPathError(
            f"{option} {name!r} is a folder that igdbeam did not create (it has no {MARKER_NAME} "
            f"marker); igdbeam never deletes or writes into it (choose another {option})"
        )
    if command is not None and marker["command"] != command:
        raise OutputPathError(
            f"{option} {name!r} holds the output of 'igdbeam {marker['command']}', not of "
            f"'igdbeam {command}'; igdbeam does not replace it (choose another {option})"
        )
    if not overwrite:
        raise OutputPathError(
            f"{option} {name!r} already exists; pass --overwrite (overwrite=True) to replace it"
        )


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
    _dir_verdict(target, command, overwrite, option)
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
    name = str(target)
    if target.is_dir():
        raise OutputPathError(f"{option} {name!r} is a folder; {option} names a file")
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise OutputPathError(f"{option} {name!r} already exists; pass --overwrite to replace it")
    return ensure_writable_dir(target.absolute().parent)


# ------------------------------------------------------------------------------ atomic writes
@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a uniquely named temp file next to ``path``; if the block succeeds it is flushed,
    fsynced and renamed over ``path``, otherwise removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a unique temp path next to ``path`` (same suffix) for a writer that takes a path
    (e.g. ``savefig``); on success it is fsynced and renamed over ``path``, otherwise removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync_file(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _swap_in(tmp: Path, target: Path) -> None:
    """Rename the complete folder ``tmp`` to ``target``, moving an existing ``target`` aside
    first and deleting it afterwards; on failure the old ``target`` is put back."""
    olds: list[Path] = []
    try:
        for _attempt in range(5):
            if target.exists() or target.is_symlink():
                olds.append(_unique_sibling(target, "old"))
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
    _fsync_dir(target.parent)
    for old in olds:
        if old.exists():
            _rmtree_fully(old)


def _public_dir(path: Path) -> None:
    """Give a ``mkdtemp`` folder (mode 0700) the permissions of a normal folder (umask)."""
    path.chmod(0o777 & ~_umask())


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
            _dir_verdict(target, command, overwrite, option)
        elif target.is_symlink() or (target.exists() and not target.is_dir()):
            raise OutputPathError(f"{option} {str(target)!r} exists and is not a folder")
        elif target.exists() and not overwrite:
            raise OutputPathError(f"{option} {str(target)!r} already exists")

    verdict()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _public_dir(tmp)
        yield tmp
        if command is not None:
            write_marker(tmp, command)
        _fsync_tree(tmp)
        verdict()  # the long work may have given someone time to put something there
        _swap_in(tmp, target)
    except BaseException:
        _rmtree_fully(tmp)
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
    _dir_verdict(target, command, overwrite, option)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = _unique_sibling(target, "old")
    try:
        if target.exists():
            os.rename(target, old)
        target.mkdir()
        write_marker(target, command)
        yield target
    except BaseException:
        if target.is_dir() and (
            not any(target.iterdir()) or (read_marker(target) or {}).get("command") == command
        ):
            _rmtree_fully(target)
        if old.exists() and not target.exists():
            os.rename(old, target)
        raise
    if old.exists():
        _rmtree_fully(old)


# ------------------------------------------------------------------------------ JSON and CSV
def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def dump_json(fh: IO[str], data: Any) -> None:
    """Write ``data`` as indented JSON to an open text file (numpy values and NaN handled)."""
    json.dump(_jsonable(data), fh, indent=2)
    fh.write("\n")


def dump_csv(
    fh: IO[str], rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> None:
    """Write dict rows as CSV to an open text file (opened with ``newline=""``)."""
    if columns is None:
        cols: list[str] = []
        for r in rows:
            cols.extend(k for k in r if k not in cols)
        columns = cols
    writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _jsonable(v) for k, v in r.items()})


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (numpy values and NaN handled)."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        dump_json(fh, data)
    return Path(path)


def write_csv(
    path: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
) -> Path:
    """Write dict rows as CSV atomically; ``columns`` defaults to the keys in first-seen order."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        dump_csv(fh, rows, columns)
    return Path(path)
