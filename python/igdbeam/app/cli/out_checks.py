"""The CLI's output checks: before any long work, may the command write its outputs?

The parent folders a check creates are remembered in :data:`CREATED_DIRS`, so that a failed or
interrupted command removes them again.
"""

from __future__ import annotations

from pathlib import Path

CREATED_DIRS: list[Path] = []  # parent folders the output checks created (removed on failure)


def check_out_dir(path: Path, command: str, overwrite: bool, option: str = "--out") -> None:
    """Before any work: may ``igdbeam <command>`` write the output folder ``path``?"""
    from igdbeam.io import check_output_dir

    CREATED_DIRS.extend(check_output_dir(path, command, overwrite=overwrite, option=option))


def check_out_file(path: Path, overwrite: bool, option: str = "--out") -> None:
    """Before any work: may the output file ``path`` be written?"""
    from igdbeam.io import check_output_file

    CREATED_DIRS.extend(check_output_file(path, overwrite=overwrite, option=option))


def remove_created_dirs() -> None:
    """Remove the (still empty) parent folders the output checks created, and forget them."""
    from igdbeam.io import remove_empty_dirs

    remove_empty_dirs(CREATED_DIRS)
    CREATED_DIRS.clear()
