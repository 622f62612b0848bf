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

Modules: :mod:`.fs` (fsync, umask, removal), :mod:`.atomic_files` (files), :mod:`.atomic_dirs`
(folders), :mod:`.markers` (the output marker), :mod:`.output_checks` (the checks before any
work), :mod:`.tables` (JSON and CSV) and :mod:`.locks` (one process at a time on a folder, or on
each numbered item of it).
"""

from igdbeam.io.atomic_dirs import atomic_dir, staged_dir
from igdbeam.io.atomic_files import atomic_open, atomic_path
from igdbeam.io.markers import MARKER_NAME, OutputPathError, read_marker, write_marker
from igdbeam.io.output_checks import (
    check_output_dir,
    check_output_file,
    ensure_output_dir,
    ensure_writable_dir,
    remove_empty_dirs,
)
from igdbeam.io.tables import dump_csv, dump_json, write_csv, write_json

__all__ = [
    "MARKER_NAME",
    "OutputPathError",
    "atomic_dir",
    "atomic_open",
    "atomic_path",
    "check_output_dir",
    "check_output_file",
    "dump_csv",
    "dump_json",
    "ensure_output_dir",
    "ensure_writable_dir",
    "read_marker",
    "remove_empty_dirs",
    "staged_dir",
    "write_csv",
    "write_json",
    "write_marker",
]
