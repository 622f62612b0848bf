"""The versioned, memory-mappable on-disk format of an ItemTrie.

Layout (little-endian):
    bytes 0..7    magic ``b"IGDTRIE\\0"``
    bytes 8..11   uint32 format version (currently 1)
    bytes 12..19  uint64 length N of the JSON header
    bytes 20..    N bytes of UTF-8 JSON: ``{"meta": {...}, "arrays": {name: {"dtype", "shape",
                  "offset"}}}``; offsets are absolute and 64-byte aligned
    then          the raw arrays
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import numpy as np
import torch

MAGIC = b"IGDTRIE\0"
VERSION = 1
_ALIGN = 64
_PREFIX = struct.Struct("<8sIQ")


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def save_trie(trie: Any, path: str | os.PathLike[str]) -> None:
    """Write ``trie`` to ``path`` atomically (a temporary file renamed into place)."""
    from igdbeam.trie import ITEM_ARRAYS, NODE_ARRAYS

    arrays = {name: trie.array(name).cpu().numpy() for name in NODE_ARRAYS + ITEM_ARRAYS}
    table: dict[str, dict[str, Any]] = {}
    header = b""
    # The header length depends on the offsets and vice versa: iterate until stable.
    for _ in range(4):
        offset = _aligned(_PREFIX.size + len(header))
        for name, arr in arrays.items():
            table[name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset}
            offset = _aligned(offset + arr.nbytes)
        new_header = json.dumps({"meta": trie.meta, "arrays": table}, sort_keys=True).encode()
        if len(new_header) == len(header):
            break
        header = new_header
    tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(_PREFIX.pack(MAGIC, VERSION, len(header)))
        f.write(header)
        for name, arr in arrays.items():
            f.seek(table[name]["offset"])
            f.write(np.ascontiguousarray(arr).tobytes())
        f.truncate(max(f.tell(), _PREFIX.size + len(header)))
    os.replace(tmp, path)


def _fail(path: Any, why: str) -> None:
    raise ValueError(f"{os.fspath(path)} is not a valid igdbeam trie file: {why}")


def load_trie(path: str | os.PathLike[str], *, mmap: bool = True) -> Any:
    """Read a trie file; with ``mmap`` the arrays are mapped copy-on-write, not read."""
    from igdbeam.trie import ARRAY_DTYPES, ITEM_ARRAYS, NODE_ARRAYS, ItemTrie

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size:
            _fail(path, "the file is too short")
        magic, version, header_len = _PREFIX.unpack(prefix)
        if magic != MAGIC:
            _fail(path, f"wrong magic bytes {magic!r} (expected {MAGIC!r})")
        if version != VERSION:
            _fail(path, f"format version {version}, this igdbeam reads version {VERSION}")
        if header_len > size - _PREFIX.size:
            _fail(path, "the header runs past the end of the file")
        try:
            header = json.loads(f.read(header_len).decode())
            meta, table = header["meta"], header["arrays"]
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            _fail(path, f"unreadable header ({exc})")
    arrays: dict[str, torch.Tensor] = {}
    for name in NODE_ARRAYS + ITEM_ARRAYS:
        if name not in table:
            _fail(path, f"array {name!r} is missing")
        entry = table[name]
        dtype = np.dtype(entry["dtype"])
        if dtype != ARRAY_DTYPES[name]:
            _fail(path, f"array {name!r} has dtype {dtype}, expected {ARRAY_DTYPES[name]}")
        shape = tuple(int(s) for s in entry["shape"])
        offset = int(entry["offset"])
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if offset < 0 or offset + nbytes > size:
            _fail(path, f"array {name!r} runs past the end of the file (truncated?)")
        if nbytes == 0:
            arr = np.zeros(shape, dtype=dtype)
        elif mmap:
            arr = np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape)
        else:
            with open(path, "rb") as f:
                f.seek(offset)
                arr = np.frombuffer(f.read(nbytes), dtype=dtype).reshape(shape).copy()
        arrays[name] = torch.from_numpy(np.asarray(arr))
    _validate_structure(path, arrays, meta)
    return ItemTrie(arrays, meta)


def _validate_structure(path: Any, a: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    n = a["token"].shape[0]
    for name in ("parent", "depth", "entropy", "info_gain", "info_gain_norm", "zero_ig"):
        if a[name].shape[0] != n:
            _fail(path, f"array {name!r} has {a[name].shape[0]} entries, expected {n}")
    off = a["child_offsets"]
    if off.shape[0] != n + 1 or int(off[0]) != 1 or int(off[-1]) != n:
        _fail(path, "field 'child_offsets' is inconsistent with the node count")
    if n > 1 and bool((off[1:] < off[:-1]).any()):
        _fail(path, "field 'child_offsets' is not monotone")
    for key in ("entropy", "vocab_size", "max_depth", "max_fanout", "num_items"):
        if key not in meta:
            _fail(path, f"meta field {key!r} is missing")
    if a["item_leaf"].shape[0] != int(meta["num_items"]):
        _fail(path, "field 'item_leaf' does not have one entry per item")
