"""The marker of igdbeam's output folders and the rule for replacing a folder.

Output folders igdbeam creates carry :data:`MARKER_NAME`, with the JSON
``{"command": ..., "version": ...}``; igdbeam replaces a folder only when it carries the marker of
the same command (and the caller asked to overwrite).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from igdbeam.io.atomic_files import atomic_open
from igdbeam.io.fs import MARKER_NAME, unfinished_by_dead_writer

__all__ = [
    "MARKER_NAME",
    "OutputPathError",
    "dir_verdict",
    "read_marker",
    "unfinished_by_dead_writer",
    "write_marker",
]


class OutputPathError(FileExistsError):
    """An output path igdbeam will not write: a user's file or folder, or an output that exists
    when overwriting was not asked for. The message names the path and the way out."""


def read_marker(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of an igdbeam output folder, or None when the folder has none (or a bad one)."""
    p = Path(folder) / MARKER_NAME
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("command"), str) else None


def write_marker(folder: str | os.PathLike[str], command: str, *, unfinished: bool = False) -> Path:
    """Mark ``folder`` as the output of ``igdbeam <command>`` (atomically).

    ``unfinished=True`` also records this process as the writer of a folder that is being
    filled in place (``"writer": "<pid>-<host hash>"``); writing the marker again without it
    declares the folder complete. A run that finds an unfinished folder whose writer no longer
    runs (killed) treats it as a leftover (:func:`igdbeam.io.fs.clean_leftovers`).
    """
    from igdbeam._version import __version__
    from igdbeam.io.fs import writer_tag

    path = Path(folder) / MARKER_NAME
    data: dict[str, Any] = {"command": command, "version": __version__}
    if unfinished:
        data["writer"] = writer_tag()
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.write("\n")
    return path


def dir_verdict(target: Path, command: str | None, overwrite: bool, option: str) -> None:
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
