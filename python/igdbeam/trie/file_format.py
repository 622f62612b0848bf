"""The versioned, memory-mappable on-disk format of a trie's arrays (:mod:`igdbeam.trie.layout`).

Layout (little-endian), format version 2:
    bytes 0..7    magic ``b"IGDTRIE\\0"``
    bytes 8..11   uint32 format version (2)
    bytes 12..19  uint64 length N of the JSON header
    bytes 20..23  uint32 CRC-32 (zlib) of the N header bytes: the metadata (vocabulary size,
                  entropy mode, depth, fan-out, item count) and the array table with each
                  array's checksum, so every byte that the trie depends on is checksummed
    bytes 24..    N bytes of UTF-8 JSON: ``{"meta": {...}, "arrays": {name: {"dtype", "shape",
                  "offset", "crc32"}}}``; offsets are absolute and 64-byte aligned, ``crc32`` (zlib)
                  covers the array's bytes
    then          the raw arrays

Version 1 files (written by igdbeam 0.1.0 before the header checksum) have no bytes 20..23 (the
header starts at byte 20) and are still read: their arrays carry checksums (files written before
those were added have none) and every value is validated, but their metadata is not
checksummed. Save them again to upgrade them.

Guarantees:
    * :func:`load_trie` validates the header and every array (dtype, length, ranges, the CSR /
      breadth-first / leaf-item invariants, finite floats, checksums, the metadata) before it
      returns, so that no file can make the native kernels read or write out of bounds: a bad
      file raises :class:`~igdbeam.errors.TrieFormatError` (a ValueError).
    * :func:`save_trie` writes a unique temporary file in the destination folder, flushes and
      fsyncs it and renames it into place: readers see the old file or the new one, whole, and
      concurrent writers of one path leave exactly one writer's trie. It refuses a trie that
      :func:`load_trie` would refuse, so a saved trie always loads. The temporary name carries
      the writer's pid; a save removes the temporary files of earlier saves that were killed.
    * The memory-map contract: with ``mmap=True`` (the default) the arrays are pages of the file
      mapped copy-on-write. Replace a trie file by renaming a new file over it (as
      :func:`save_trie` does); never overwrite or truncate it in place while a process has it
      loaded: a truncated mapping dies with SIGBUS and rewritten pages change the loaded trie
      behind its validation. ``mmap=False`` reads the whole file into memory once instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import mmap as _mmap
import os
import stat
import struct
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from igdbeam.errors import TrieFormatError
from igdbeam.io.fs import clean_leftovers, writer_prefix
from igdbeam.trie.layout import (
    ALL_ARRAYS,
    ARRAY_DTYPES,
    ENTROPY_MODES,
    META_FIELDS,
    TrieData,
    TrieMeta,
)

MAGIC = b"IGDTRIE\0"
VERSION = 2
READABLE_VERSIONS = (1, 2)
_ALIGN = 64
_START = struct.Struct("<8sIQ")  # magic, version, header length: every version starts so
_PREFIX = struct.Struct("<8sIQI")  # version 2: ... and the header's CRC-32
_PREFIX_SIZES = {1: _START.size, 2: _PREFIX.size}


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _crc32(arr: np.ndarray) -> int:
    """The zlib CRC-32 of the array's bytes (C order)."""
    return zlib.crc32(np.ascontiguousarray(arr).data.cast("B")) & 0xFFFFFFFF


def _new_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file (0o666 minus the umask).

    Read from /proc (os.umask would change the process-wide umask under other threads' feet).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o644


def save_trie(data: TrieData, path: str | os.PathLike[str]) -> None:
    """Write a trie's arrays and metadata to ``path`` atomically.

    The bytes go to a uniquely named temporary file in the destination folder, which is flushed,
    fsynced and then renamed over ``path`` (``os.replace``); on any failure the temporary file is
    removed and ``path`` is left as it was. Concurrent saves to one path (threads or processes)
    each use their own temporary file, so the file left behind is one writer's trie, whole, and a
    reader never sees a partial file. A trie memory-mapped from ``path`` stays valid: it keeps
    the old file's pages.
    """
    arrays = {name: np.ascontiguousarray(data.arrays[name].cpu().numpy()) for name in ALL_ARRAYS}
    try:  # a trie that saves must load: refuse to write what load would refuse
        meta = validate_arrays(arrays, data.meta)
    except TrieFormatError as exc:
        raise TrieFormatError(
            f"refusing to save an invalid trie to {os.fspath(path)}: {exc}"
        ) from None
    crcs = {name: _crc32(arr) for name, arr in arrays.items()}
    table: dict[str, dict[str, Any]] = {}
    header = b""
    # The header length depends on the offsets and vice versa: iterate until stable.
    for _ in range(4):
        offset = _aligned(_PREFIX.size + len(header))
        for name, arr in arrays.items():
            table[name] = {
                "dtype": arr.dtype.str,
                "shape": list(arr.shape),
                "offset": offset,
                "crc32": crcs[name],
            }
            offset = _aligned(offset + arr.nbytes)
        new_header = json.dumps({"meta": meta, "arrays": table}, sort_keys=True).encode()
        if len(new_header) == len(header):
            break
        header = new_header
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    clean_leftovers(target)  # temp files of an earlier save that was killed (SIGKILL)
    fd, tmp = tempfile.mkstemp(prefix=writer_prefix(Path(target)), suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_PREFIX.pack(MAGIC, VERSION, len(header), zlib.crc32(header) & 0xFFFFFFFF))
            f.write(header)
            for name, arr in arrays.items():
                f.seek(table[name]["offset"])
                f.write(arr.data.cast("B"))
            f.truncate(max(f.tell(), _PREFIX.size + len(header)))
            f.flush()
            os.fchmod(f.fileno(), _new_file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable (best effort: not every file system allows it).
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _fail(path: str | os.PathLike[str], why: str) -> NoReturn:
    raise TrieFormatError(f"{os.fspath(path)} is not a valid igdbeam trie file: {why}")


def _as_int(value: object, what: str) -> int:
    """A JSON integer (not a bool, float or string), else TrieFormatError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TrieFormatError(f"{what} must be an integer, got {value!r}")
    return value


@contextlib.contextmanager
def _open_regular(path: str | os.PathLike[str]) -> Iterator[io.BufferedReader]:
    """Open ``path`` for reading only if it is a regular file, without ever blocking.

    ``O_NONBLOCK`` makes opening a FIFO return at once (a plain open waits for a writer
    forever); the type is then checked on the open descriptor, so a FIFO, a device such as
    ``/dev/zero``, a socket or a folder is refused before a byte is read.

    Raises:
        TrieFormatError: ``path`` is not a regular file.
        OSError: it cannot be opened (missing, permissions).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        _fail(path, "it is a folder, not a regular file")
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = (
                "a folder"
                if stat.S_ISDIR(mode)
                else "a FIFO (named pipe)"
                if stat.S_ISFIFO(mode)
                else "a device"
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket"
                if stat.S_ISSOCK(mode)
                else "not a regular file"
            )
            _fail(path, f"it is {kind}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def load_trie(path: str | os.PathLike[str], *, mmap: bool = True) -> TrieData:
    """Read and validate a trie file written by :func:`save_trie`; return its arrays (CPU).

    Args:
        path: the file.
        mmap: ``True`` maps the file copy-on-write (shared page cache, no copy; see the
            memory-map contract in this module's docstring: replace the file by rename, never
            overwrite it in place while it is loaded). ``False`` reads the whole file into
            private memory once: the loaded trie no longer depends on the file at all.

    Everything is read from one open file descriptor, so a save that renames a new file over
    ``path`` during the load cannot mix two files.

    Raises:
        TrieFormatError: the file is not a valid trie (a ValueError; see
            :func:`validate_arrays` for what is checked), or not a regular file (a FIFO, a
            device, a folder: refused at once, never read or waited on).
        OSError: the file cannot be opened or read.
    """
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        start = f.read(_START.size)
        if len(start) < _START.size:
            _fail(path, "the file is too short")
        magic, version, header_len = _START.unpack(start)
        if magic != MAGIC:
            _fail(path, f"wrong magic bytes {magic!r} (expected {MAGIC!r})")
        if version not in READABLE_VERSIONS:
            _fail(
                path,
                f"format version {version}; this igdbeam reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))} (a newer igdbeam wrote it?)",
            )
        prefix_size = _PREFIX_SIZES[version]
        header_crc: int | None = None
        if version >= 2:
            raw_crc = f.read(4)
            if len(raw_crc) < 4:
                _fail(path, "the file is too short")
            (header_crc,) = struct.unpack("<I", raw_crc)
        if header_len > size - prefix_size:
            _fail(path, "the header runs past the end of the file")
        raw_header = f.read(header_len)
        if header_crc is not None and zlib.crc32(raw_header) & 0xFFFFFFFF != header_crc:
            _fail(path, "the header fails its checksum (the metadata or array table is corrupt)")
        try:
            header = json.loads(raw_header.decode())
            meta, table = header["meta"], header["arrays"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as exc:
            _fail(path, f"unreadable header ({type(exc).__name__}: {exc})")
        if not isinstance(meta, dict) or not isinstance(table, dict):
            _fail(path, "the header's 'meta' and 'arrays' must be JSON objects")
        data_start = prefix_size + header_len
        if mmap:
            buf: _mmap.mmap | bytearray = _mmap.mmap(f.fileno(), size, access=_mmap.ACCESS_COPY)
        else:
            buf = bytearray(size)
            f.seek(0)
            if f.readinto(buf) != size:
                _fail(path, "the file changed size while it was read")
    arrays: dict[str, np.ndarray] = {}
    for name in ALL_ARRAYS:
        entry = table.get(name)
        if not isinstance(entry, dict):
            _fail(path, f"array {name!r} is missing")
        try:
            dtype = np.dtype(entry["dtype"])
            shape = entry["shape"]
            if not isinstance(shape, list) or len(shape) != 1:
                raise TrieFormatError(f"shape must be a 1-element list, got {shape!r}")
            count = _as_int(shape[0], "its length")
            offset = _as_int(entry["offset"], "its offset")
            crc = entry.get("crc32")
            if crc is not None:
                crc = _as_int(crc, "its crc32")
        except (KeyError, TypeError, ValueError) as exc:
            _fail(path, f"array {name!r} has a bad table entry ({exc})")
        if dtype != ARRAY_DTYPES[name]:
            _fail(path, f"array {name!r} has dtype {dtype}, expected {ARRAY_DTYPES[name]}")
        nbytes = count * dtype.itemsize
        if count < 0 or offset < data_start:
            _fail(path, f"array {name!r} has length {count} at offset {offset}")
        if offset + nbytes > size:
            _fail(path, f"array {name!r} runs past the end of the file (truncated?)")
        if count == 0:
            arr = np.zeros(0, dtype=dtype)
        else:
            arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
        if crc is not None and _crc32(arr) != crc:
            _fail(path, f"array {name!r} fails its checksum (the file is corrupt)")
        arrays[name] = arr
    try:
        checked = validate_arrays(arrays, meta)
    except TrieFormatError as exc:
        _fail(path, str(exc))
    return TrieData({name: torch.from_numpy(arr) for name, arr in arrays.items()}, checked)


def validate_arrays(a: Mapping[str, np.ndarray], meta: Mapping[str, object]) -> TrieMeta:
    """Check that ``a`` and ``meta`` form a well-formed trie; return the checked metadata.

    Raises:
        TrieFormatError: ``a`` and ``meta`` do not form a well-formed trie.

    Checks every array's dtype and length; the metadata (entropy mode, vocabulary size, depth,
    fan-out, item count) against the arrays; token ids in ``[0, vocab_size)`` (``[0, 2^31)``
    without a vocabulary) below the root; the breadth-first CSR layout (``child_offsets`` starts
    at 1, ends at ``num_nodes`` and never decreases, each node's ``parent`` is the node whose
    child range holds it and comes before it, ``depth`` = parent's + 1, siblings strictly
    ascending by token); finite entropy and IG, IG~ in [0, 1], zero-IG flags in {0, 1}; leaves
    (``leaf_nodes`` is exactly the childless nodes, ascending), every leaf holding at least one
    item, every item on exactly one leaf (ascending within it) and ``item_leaf`` agreeing with
    ``leaf_items``; leaf weights finite, ``>= 0`` and not all 0. O(num_nodes + num_items).
    The returned metadata holds exactly the :class:`~igdbeam.trie.layout.TrieMeta` fields.
    """

    def fail(why: str) -> NoReturn:
        raise TrieFormatError(why)

    for name, dtype in ARRAY_DTYPES.items():
        if name not in a:
            fail(f"array {name!r} is missing")
        if a[name].dtype != dtype or a[name].ndim != 1:
            fail(f"array {name!r} must be 1-D {dtype}, got {a[name].ndim}-D {a[name].dtype}")
    for key in META_FIELDS:
        if key not in meta:
            fail(f"meta field {key!r} is missing")
    entropy = meta["entropy"]
    if not isinstance(entropy, str) or entropy not in ENTROPY_MODES:
        fail(f"meta field 'entropy' is {entropy!r}, not one of {sorted(ENTROPY_MODES)}")
    vocab = _as_int(meta["vocab_size"], "meta field 'vocab_size'")
    max_depth = _as_int(meta["max_depth"], "meta field 'max_depth'")
    max_fanout = _as_int(meta["max_fanout"], "meta field 'max_fanout'")
    num_items = _as_int(meta["num_items"], "meta field 'num_items'")
    if vocab != -1 and vocab < 1:
        fail(f"meta field 'vocab_size' is {vocab} (expected -1 or a positive size)")
    if num_items < 1:
        fail(f"meta field 'num_items' is {num_items} (a trie holds at least one item)")

    # ---- nodes
    n = a["token"].shape[0]
    if n < 2:
        fail(f"the trie has {n} nodes (a root and at least one item path are needed)")
    for name in ("parent", "depth", "entropy", "info_gain", "info_gain_norm", "zero_ig"):
        if a[name].shape[0] != n:
            fail(f"array {name!r} has {a[name].shape[0]} entries, expected {n}")
    off = a["child_offsets"].astype(np.int64)
    if off.shape[0] != n + 1 or off[0] != 1 or off[-1] != n:
        fail("field 'child_offsets' is inconsistent with the node count")
    fanout = np.diff(off)
    if bool((fanout < 0).any()):
        fail("field 'child_offsets' is not monotone")
    token = a["token"].astype(np.int64)
    parent = a["parent"].astype(np.int64)
    depth = a["depth"].astype(np.int64)
    if token[0] != -1 or parent[0] != -1 or depth[0] != 0:
        fail("the root (node 0) must have token -1, parent -1 and depth 0")
    tok = token[1:]
    limit = vocab if vocab > 0 else 2**31 - 1
    if int(tok.min()) < 0 or int(tok.max()) >= limit:
        bad = int(np.argmax((tok < 0) | (tok >= limit))) + 1
        fail(f"node {bad} has token id {int(token[bad])}, outside [0, {limit})")
    # Node c >= 1 is a child of the p with off[p] <= c < off[p + 1] (breadth-first CSR).
    csr_parent = np.repeat(np.arange(n, dtype=np.int64), fanout)
    if not np.array_equal(parent[1:], csr_parent):
        bad = int(np.argmax(parent[1:] != csr_parent)) + 1
        fail(
            f"node {bad} has parent {int(parent[bad])} but lies in the child range of node "
            f"{int(csr_parent[bad - 1])}"
        )
    if bool((csr_parent >= np.arange(1, n)).any()):
        bad = int(np.argmax(csr_parent >= np.arange(1, n))) + 1
        fail(f"node {bad} comes before its parent {int(csr_parent[bad - 1])} (not breadth-first)")
    if not np.array_equal(depth[1:], depth[csr_parent] + 1):
        bad = int(np.argmax(depth[1:] != depth[csr_parent] + 1)) + 1
        fail(
            f"node {bad} has depth {int(depth[bad])}, its parent's depth + 1 is "
            f"{int(depth[csr_parent[bad - 1]]) + 1}"
        )
    same = csr_parent[1:] == csr_parent[:-1]
    if bool((tok[1:][same] <= tok[:-1][same]).any()):
        bad = int(np.flatnonzero(same & (tok[1:] <= tok[:-1]))[0]) + 2
        fail(
            f"the children of node {int(csr_parent[bad - 1])} are not strictly ascending by "
            f"token (node {bad})"
        )
    if int(fanout.max()) != max_fanout:
        fail(f"meta field 'max_fanout' is {max_fanout}, the arrays say {int(fanout.max())}")
    if int(depth.max()) != max_depth:
        fail(f"meta field 'max_depth' is {max_depth}, the arrays say {int(depth.max())}")
    for name in ("entropy", "info_gain", "info_gain_norm"):
        if not bool(np.isfinite(a[name]).all()):
            fail(f"array {name!r} holds a value that is not finite")
    ign = a["info_gain_norm"]
    if bool(((ign < 0) | (ign > 1)).any()):
        fail("array 'info_gain_norm' holds a value outside [0, 1]")
    if bool((a["zero_ig"] > 1).any()):
        fail("array 'zero_ig' holds a value other than 0 and 1")

    # ---- leaves and items
    leaves = a["leaf_nodes"].astype(np.int64)
    childless = np.flatnonzero(fanout == 0)
    if not np.array_equal(leaves, childless):
        fail("field 'leaf_nodes' is not exactly the childless nodes in ascending order")
    num_leaves = leaves.shape[0]
    loff = a["leaf_item_offsets"].astype(np.int64)
    items = a["leaf_items"].astype(np.int64)
    if loff.shape[0] != num_leaves + 1 or loff[0] != 0 or loff[-1] != items.shape[0]:
        fail("field 'leaf_item_offsets' is inconsistent with 'leaf_nodes' / 'leaf_items'")
    per_leaf = np.diff(loff)
    if bool((per_leaf < 1).any()):
        fail("field 'leaf_item_offsets' gives a leaf without items (or decreases)")
    # Items without a path (a trie over part of a catalog) have item_leaf -1 and no leaf entry.
    if items.shape[0] > num_items or a["item_leaf"].shape[0] != num_items:
        fail(f"field 'item_leaf' needs one entry per item ({num_items}), 'leaf_items' at most")
    if int(items.min()) < 0 or int(items.max()) >= num_items:
        fail(f"field 'leaf_items' holds an item id outside [0, {num_items})")
    listed = np.bincount(items, minlength=num_items)
    if bool((listed > 1).any()):
        fail("field 'leaf_items' lists an item more than once")
    if not np.array_equal(listed == 0, a["item_leaf"].astype(np.int64) == -1):
        fail("field 'item_leaf' must be -1 exactly for the items that no leaf lists")
    leaf_of_entry = np.repeat(np.arange(num_leaves), per_leaf)
    within = leaf_of_entry[1:] == leaf_of_entry[:-1]
    if bool((items[1:][within] <= items[:-1][within]).any()):
        fail("field 'leaf_items' is not ascending within a leaf")
    if not np.array_equal(a["item_leaf"].astype(np.int64)[items], leaves[leaf_of_entry]):
        fail("fields 'item_leaf' and 'leaf_items' disagree")
    w = a["leaf_weight"]
    if w.shape[0] != num_leaves:
        fail(f"field 'leaf_weight' has {w.shape[0]} entries, expected one per leaf ({num_leaves})")
    if not bool(np.isfinite(w).all()) or bool((w < 0).any()) or not float(w.sum()) > 0:
        fail("field 'leaf_weight' must be finite, >= 0 and not all 0")
    return TrieMeta(
        entropy=entropy,
        vocab_size=vocab,
        max_depth=max_depth,
        max_fanout=max_fanout,
        num_items=num_items,
    )
