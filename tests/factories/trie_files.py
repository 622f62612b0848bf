"""Trie files for the load checks: a small trie and a writer independent of igdbeam's own.

``write_trie_file`` follows the layout documented in ``igdbeam.trie.file_format`` without using
it, so tests can write arrays and metadata that igdbeam would never produce.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factories.catalogs import EXAMPLE_PATHS, EXAMPLE_WEIGHTS
from igdbeam import ItemTrie

# The spec's example plus a deeper item and a duplicate title: nodes 1, 2 are tokens 10 and 20.
FILE_PATHS = [*EXAMPLE_PATHS, [20, 22, 5, 2], [20, 21, 2]]
FILE_WEIGHTS = [*map(float, EXAMPLE_WEIGHTS), 3.0, 1.0]
FILE_VOCAB = 30


def file_trie() -> ItemTrie:
    """The trie of ``FILE_PATHS`` / ``FILE_WEIGHTS`` over ``FILE_VOCAB`` tokens."""
    return ItemTrie.from_token_ids(FILE_PATHS, FILE_WEIGHTS, vocab_size=FILE_VOCAB)


def write_trie_file(
    path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], *, crc: bool = True
) -> None:
    """Write ``arrays`` / ``meta`` in the documented layout.

    ``crc=False`` writes a file without checksums (the layout before they were added), so the
    structural checks alone must catch a bad value.
    """
    table: dict[str, dict[str, Any]] = {}
    header = b""
    for _ in range(4):
        offset = (20 + len(header) + 63) // 64 * 64
        for name, arr in arrays.items():
            table[name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset}
            if crc:
                table[name]["crc32"] = zlib.crc32(np.ascontiguousarray(arr).tobytes())
            offset = (offset + arr.nbytes + 63) // 64 * 64
        new = json.dumps({"meta": meta, "arrays": table}).encode()
        if len(new) == len(header):
            break
        header = new
    out = bytearray(offset)
    out[:20] = struct.pack("<8sIQ", b"IGDTRIE\0", 1, len(header))
    out[20 : 20 + len(header)] = header
    for name, arr in arrays.items():
        raw = np.ascontiguousarray(arr).tobytes()
        out[table[name]["offset"] : table[name]["offset"] + len(raw)] = raw
    path.write_bytes(bytes(out))


def trie_parts(trie: ItemTrie) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Copies of the trie's arrays (numpy) and its metadata, ready to be edited."""
    return {k: v.numpy().copy() for k, v in trie.arrays().items()}, trie.meta


def assert_same_trie(a: ItemTrie, b: ItemTrie) -> None:
    """The two tries have the same metadata and the same arrays, bit for bit."""
    assert a.meta == b.meta
    assert sorted(a.arrays()) == sorted(b.arrays())
    for name, arr in a.arrays().items():
        assert torch.equal(b.array(name), arr), name
