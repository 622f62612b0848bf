"""Trie files that are corrupt, truncated or crafted, one bad value at a time: ``ItemTrie.load``
refuses each with a TrieFormatError naming the problem; and the memory-map contract of loaded
tries. (Random mutations and the native ops on loaded files: ``test_trie_load_fuzz.py``.)"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from factories.trie_files import (
    FILE_PATHS,
    FILE_VOCAB,
    assert_same_trie,
    file_trie,
    trie_parts,
    write_trie_file,
)
from igdbeam import IGDBeamError, ItemTrie, TrieFormatError


def test_typed_errors_are_value_errors() -> None:
    import igdbeam

    for name in ("TrieFormatError", "VocabularyError", "InvalidIdError"):
        cls = getattr(igdbeam, name)
        assert issubclass(cls, IGDBeamError) and issubclass(cls, ValueError), name
        assert name in igdbeam.__all__
    assert "IGDBeamError" in igdbeam.__all__


def test_independent_writer_round_trip(tmp_path: Path) -> None:
    trie = file_trie()
    for crc in (True, False):
        path = tmp_path / f"w{crc}.igdtrie"
        write_trie_file(path, *trie_parts(trie), crc=crc)
        assert_same_trie(trie, ItemTrie.load(path))
    trie.validate()


# ------------------------------------------------------------------ one bad value at a time
def _set(name: str, index: int, value: Any) -> Callable[[dict, dict], None]:
    def mutate(a: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        a[name][index] = value

    return mutate


def _meta(key: str, value: Any) -> Callable[[dict, dict], None]:
    def mutate(a: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if value is _DROP:
            del meta[key]
        else:
            meta[key] = value

    return mutate


def _replace(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict, dict], None]:
    def mutate(a: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        a[name] = fn(a[name])

    return mutate


def _swap_siblings(a: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    a["token"][[1, 2]] = a["token"][[2, 1]]  # the root's children 10 and 20


def _bad_item_leaf(a: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    a["item_leaf"][[0, 1]] = a["item_leaf"][[1, 0]]


def _duplicate_item(a: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    a["leaf_items"][0] = a["leaf_items"][1]


_DROP = object()

# (mutation, expected message). The example trie: nodes 1, 2 are tokens 10 and 20 below the root.
BAD_VALUES = [
    (_set("token", 3, -5), r"node 3 has token id -5, outside \[0, 30\)"),
    (_set("token", 3, 30), r"node 3 has token id 30"),
    (_set("token", 3, -(2**31)), r"token id -2147483648"),
    (_set("token", 0, 4), r"root .* token -1"),
    (_swap_siblings, r"not strictly ascending"),
    (_set("token", 2, 10), r"not strictly ascending"),
    (_set("parent", 4, 999), r"node 4 has parent 999"),
    (_set("parent", 4, -7), r"node 4 has parent -7"),
    (_set("parent", 4, 2), r"node 4 has parent 2 but lies in the child range of node 1"),
    (_set("parent", 0, 3), r"root"),
    (_set("depth", 5, 9), r"node 5 has depth 9"),
    (_set("depth", 0, 1), r"root"),
    (_set("child_offsets", 2, 1), r"node .* has parent|not monotone"),
    (_set("child_offsets", 0, 0), r"child_offsets"),
    (_set("child_offsets", -1, 99), r"child_offsets"),
    (_set("child_offsets", 1, 2**31 - 1), r"child_offsets"),
    (_set("child_offsets", 1, -(2**31)), r"child_offsets"),
    (_set("entropy", 3, np.nan), r"'entropy' holds a value that is not finite"),
    (_set("info_gain", 3, np.inf), r"'info_gain' holds a value that is not finite"),
    (_set("info_gain_norm", 3, 1.5), r"outside \[0, 1\]"),
    (_set("info_gain_norm", 3, -0.5), r"outside \[0, 1\]"),
    (_set("zero_ig", 3, 7), r"'zero_ig'"),
    (_set("leaf_nodes", 0, 1), r"'leaf_nodes'"),
    (_set("leaf_nodes", 0, 10**6), r"'leaf_nodes'"),
    (_set("leaf_nodes", 0, -1), r"'leaf_nodes'"),
    (_set("leaf_item_offsets", 1, 0), r"'leaf_item_offsets'"),
    (_set("leaf_item_offsets", -1, 99), r"'leaf_item_offsets'"),
    (_set("leaf_items", 0, 6), r"item id outside \[0, 6\)"),
    (_set("leaf_items", 0, -1), r"item id outside"),
    (_duplicate_item, r"lists an item more than once"),
    (_set("item_leaf", 0, 10**6), r"'item_leaf' and 'leaf_items' disagree"),
    (_set("item_leaf", 0, -3), r"disagree"),
    (_bad_item_leaf, r"disagree"),
    (_set("leaf_weight", 0, -1.0), r"'leaf_weight'"),
    (_set("leaf_weight", 0, np.nan), r"'leaf_weight'"),
    (_replace("leaf_weight", np.zeros_like), r"'leaf_weight'"),
    (_replace("token", lambda t: t.astype(np.int64)), r"'token' has dtype int64"),
    (_replace("parent", lambda t: t[:-1]), r"'parent' has \d+ entries"),
    (_replace("leaf_weight", lambda t: t[:-1]), r"'leaf_weight'"),
    (_replace("item_leaf", lambda t: t[:-1]), r"one entry per item"),
    (_replace("token", lambda t: t[:1]), r"nodes|entries"),
    (_replace("depth", lambda t: t.byteswap().view(t.dtype.newbyteorder())), r"dtype"),
    (_meta("max_fanout", 1), r"'max_fanout' is 1"),
    (_meta("max_depth", 2), r"'max_depth' is 2"),
    (_meta("num_items", 5), r"one entry per item"),
    (_meta("num_items", 0), r"'num_items' is 0"),
    (_meta("vocab_size", 12), r"outside \[0, 12\)"),
    (_meta("vocab_size", 0), r"'vocab_size' is 0"),
    (_meta("vocab_size", "30"), r"'vocab_size' must be an integer"),
    (_meta("vocab_size", 30.0), r"'vocab_size' must be an integer"),
    (_meta("max_depth", True), r"'max_depth' must be an integer"),
    (_meta("entropy", "shannon"), r"'entropy' is 'shannon'"),
    (_meta("entropy", ["global"]), r"'entropy'"),
    (_meta("num_items", _DROP), r"'num_items' is missing"),
]


@pytest.mark.parametrize(("mutate", "match"), BAD_VALUES)
@pytest.mark.parametrize("crc", [False, True])
def test_bad_values_are_refused(tmp_path: Path, mutate: Callable, match: str, crc: bool) -> None:
    arrays, meta = trie_parts(file_trie())
    mutate(arrays, meta)
    path = tmp_path / "bad.igdtrie"
    write_trie_file(path, arrays, meta, crc=crc)
    for mmap in (True, False):
        with pytest.raises(TrieFormatError, match=match):
            ItemTrie.load(path, mmap=mmap)


def _rewrite_header(path: Path, edit: Callable[[dict], Any], *, fix_crc: bool = True) -> None:
    """Edit the JSON header of a version-2 file in place; ``fix_crc`` stores the edited
    header's checksum (so the structural checks are reached), else the old one is kept."""
    data = path.read_bytes()
    (version, n, crc) = struct.unpack("<IQI", data[8:24])
    assert version == 2
    header = json.loads(data[24 : 24 + n])
    header_before = json.loads(data[24 : 24 + n])
    new = edit(header)
    first_array = min(e["offset"] for e in header_before["arrays"].values())
    # An edit edits the header in place; one that returns a list replaces it (not an object).
    new = json.dumps(new if isinstance(new, list) else header, separators=(",", ":")).encode()
    assert 24 + len(new) <= first_array  # the header still ends before the first array
    crc = zlib.crc32(new) if fix_crc else crc
    path.write_bytes(data[:12] + struct.pack("<QI", len(new), crc) + new + data[24 + len(new) :])


HEADER_EDITS = [
    (lambda h: h["arrays"].pop("parent"), r"array 'parent' is missing"),
    (lambda h: h["arrays"]["token"].update(dtype="<i8"), r"'token' has dtype int64"),
    (lambda h: h["arrays"]["token"].update(dtype="bogus"), r"bad table entry"),
    (lambda h: h["arrays"]["token"].update(dtype=7), r"bad table entry"),
    (lambda h: h["arrays"]["token"].update(shape=[-4]), r"length -4"),
    (lambda h: h["arrays"]["token"].update(shape=[3, 2]), r"1-element list"),
    (lambda h: h["arrays"]["token"].update(shape="12"), r"1-element list"),
    (lambda h: h["arrays"]["token"].update(shape=[12.0]), r"must be an integer"),
    (lambda h: h["arrays"]["token"].update(offset=0), r"at offset 0"),
    (lambda h: h["arrays"]["token"].update(offset=10**12), r"past the end"),
    (lambda h: h["arrays"]["token"].update(offset="64"), r"must be an integer"),
    (lambda h: h["arrays"]["token"].update(crc32="x"), r"must be an integer"),
    (lambda h: h["arrays"]["token"].update(crc32=1), r"checksum"),
    (lambda h: h["arrays"].update(token=[1, 2]), r"array 'token' is missing"),
    (lambda h: h.update(arrays=[]), r"must be JSON objects"),
    (lambda h: h.update(meta="x"), r"must be JSON objects"),
    (lambda h: h.pop("meta"), r"unreadable header"),
    (lambda h: [1, 2], r"unreadable header"),
]


@pytest.mark.parametrize(("edit", "match"), HEADER_EDITS)
def test_bad_headers_are_refused(tmp_path: Path, edit: Callable, match: str) -> None:
    path = tmp_path / "bad.igdtrie"
    file_trie().save(path)
    _rewrite_header(path, edit)
    with pytest.raises(TrieFormatError, match=match):
        ItemTrie.load(path)


META_EDITS = [
    lambda h: h["meta"].update(vocab_size=h["meta"]["vocab_size"] + 100),
    lambda h: h["meta"].update(entropy="conditional"),
    lambda h: h["meta"].update(num_items=h["meta"]["num_items"] + 1),
    lambda h: h["arrays"]["token"].update(crc32=h["arrays"]["token"]["crc32"] ^ 1),
]


@pytest.mark.parametrize("edit", META_EDITS)
def test_header_metadata_is_checksummed(tmp_path: Path, edit: Callable) -> None:
    """An edit of the metadata (the vocabulary size and entropy mode pass every structural
    check) or of the array table is caught by the header's checksum."""
    path = tmp_path / "t.igdtrie"
    file_trie().save(path)
    _rewrite_header(path, edit, fix_crc=False)
    for mmap in (True, False):
        with pytest.raises(TrieFormatError, match="the header fails its checksum"):
            ItemTrie.load(path, mmap=mmap)


def test_version_1_files_are_still_read(tmp_path: Path) -> None:
    """The independent writer writes format version 1 (no header checksum): still loads, and
    saving it again writes version 2."""
    path = tmp_path / "v1.igdtrie"
    arrays, meta = trie_parts(file_trie())
    write_trie_file(path, arrays, meta)
    assert struct.unpack("<I", path.read_bytes()[8:12]) == (1,)
    trie = ItemTrie.load(path)
    assert_same_trie(trie, file_trie())
    trie.save(tmp_path / "v2.igdtrie")
    assert struct.unpack("<I", (tmp_path / "v2.igdtrie").read_bytes()[8:12]) == (2,)
    data = bytearray(path.read_bytes())
    data[8:12] = struct.pack("<I", 3)
    path.write_bytes(bytes(data))
    with pytest.raises(TrieFormatError, match="format version 3; this igdbeam reads versions 1, 2"):
        ItemTrie.load(path)


def test_a_flipped_bit_in_any_array_fails_its_checksum(tmp_path: Path) -> None:
    trie = file_trie()
    path = tmp_path / "t.igdtrie"
    trie.save(path)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[12:20])
    table = json.loads(data[24 : 24 + n])["arrays"]  # format version 2: header from byte 24
    for name, entry in table.items():
        # A float bit that keeps the value valid (the lowest mantissa bit), so only the checksum
        # can tell.
        corrupt = bytearray(data)
        corrupt[entry["offset"]] ^= 1
        path.write_bytes(bytes(corrupt))
        with pytest.raises(TrieFormatError, match=f"'{name}' fails its checksum"):
            ItemTrie.load(path)


def test_file_with_negative_token_is_refused_before_any_kernel(tmp_path: Path) -> None:
    arrays, meta = trie_parts(file_trie())
    arrays["token"][3] = -1_000_000
    path = tmp_path / "neg.igdtrie"
    write_trie_file(path, arrays, meta, crc=False)
    with pytest.raises(TrieFormatError, match="node 3 has token id -1000000"):
        ItemTrie.load(path)


# ------------------------------------------------------------------ the memory-map contract
def test_copy_on_load_is_independent_of_the_file(tmp_path: Path) -> None:
    trie = file_trie()
    path = tmp_path / "t.igdtrie"
    trie.save(path)
    copied = ItemTrie.load(path, mmap=False)
    # Overwrite the file in place (what the memory-map contract forbids for mmap=True): the
    # copied trie does not notice, not even when the file shrinks to nothing.
    with open(path, "r+b") as f:
        f.write(b"\xff" * len(path.read_bytes()))
    with open(path, "r+b") as f:
        f.truncate(0)
    assert_same_trie(trie, copied)
    assert copied.walk([FILE_PATHS[4]]).tolist() == [int(trie.array("item_leaf")[4])]


def test_mmap_trie_survives_a_save_over_its_file(tmp_path: Path) -> None:
    first = file_trie()
    second = ItemTrie.from_token_ids([[3, 4, 2], [3, 5, 2]], vocab_size=FILE_VOCAB)
    path = tmp_path / "t.igdtrie"
    first.save(path)
    mapped = ItemTrie.load(path)  # mmap=True: pages of the file
    second.save(path)  # a rename: the mapped inode stays as it was
    assert_same_trie(first, mapped)
    assert_same_trie(second, ItemTrie.load(path))
    mapped.save(path)  # saving a trie mapped from the destination itself
    assert_same_trie(first, ItemTrie.load(path))
    assert_same_trie(first, mapped)
