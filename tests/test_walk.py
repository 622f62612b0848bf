"""The walk op (``ItemTrie.walk`` / ``_C.walk_paths``) on every backend (CPU always, CUDA where
built and present) against the pure-Python prefix dictionary, and CUDA against the CPU."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from cuda_testing import cuda_marks
from factories.catalogs import EXAMPLE_PATHS, EXAMPLE_WEIGHTS, synthetic_catalog
from igdbeam import ItemTrie
from igdbeam.native.library import _C
from oracles.trie import ReferenceTrie

CUDA = pytest.param("cuda", marks=cuda_marks)


@pytest.fixture(params=["cpu", CUDA])
def backend(request: pytest.FixtureRequest) -> str:
    """The device the walk runs on."""
    return request.param


def _reference_walk(ref: ReferenceTrie, trie: ItemTrie, rows: list[list[int]]) -> list[int]:
    """Node of each row from the prefix dictionary: the node whose root path is the row, or -1."""
    parent = trie.parent.cpu().numpy()
    token = trie.token.cpu().numpy()

    def path(node: int) -> tuple[int, ...]:
        out = []
        while node > 0:
            out.append(int(token[node]))
            node = int(parent[node])
        return tuple(out[::-1])

    prefix_node = {path(n): n for n in range(trie.num_nodes)}
    return [prefix_node[tuple(r)] if tuple(r) in ref.below else -1 for r in rows]


def _cpu_walk(trie: ItemTrie, tokens: torch.Tensor, lengths: torch.Tensor | None = None):
    """The CPU walk's nodes as a list (the judge of the CUDA walk)."""
    return trie.walk(tokens.cpu(), None if lengths is None else lengths.cpu()).tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_walk_matches_reference(backend: str, seed: int) -> None:
    """Random prefixes (some corrupted) of random paths reach the reference's nodes."""
    rng = np.random.default_rng(seed)
    cat = synthetic_catalog(300, 64, seed=seed, alphabet=8, max_len=6, duplicates=(0,))
    paths = cat.paths()
    weights = [float(w) for w in rng.integers(1, 20, size=len(paths))]
    trie = ItemTrie.from_token_ids(paths, weights)
    rows = []
    for _ in range(500):
        p = paths[int(rng.integers(len(paths)))]
        cut = int(rng.integers(0, len(p) + 1))
        row = list(p[:cut])
        if rng.random() < 0.3 and row:
            row[int(rng.integers(len(row)))] = int(rng.integers(0, 64))
        rows.append(row)
    width = max(len(r) for r in rows)
    tokens = torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.int64)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    want = _reference_walk(ReferenceTrie(paths, weights), trie, rows)
    assert -1 in want and 0 in want
    got = trie.to(backend).walk(tokens.to(backend), lengths.to(backend))
    assert got.device.type == backend and got.dtype == torch.int32
    assert got.cpu().tolist() == _cpu_walk(trie, tokens, lengths) == want


def test_walk_without_lengths_and_strided_rows(backend: str) -> None:
    """Without lengths every column counts; a column slice (row stride 6) reads the right ones."""
    cat = synthetic_catalog(100, 64, seed=3, min_len=3, max_len=3)
    paths = cat.paths()
    trie = ItemTrie.from_token_ids(paths)
    full = torch.tensor([p + [7, 7] for p in paths[:50]], dtype=torch.int64)
    view = full.to(backend)[:, :2]
    assert view.stride(0) == 6
    got = trie.to(backend).walk(view).cpu().tolist()
    want = _reference_walk(ReferenceTrie(paths), trie, [p[:2] for p in paths[:50]])
    assert got == trie.walk(full[:, :2].contiguous()).tolist() == want
    assert min(want) > 0


def test_walk_wide_root(backend: str) -> None:
    """A root with over 50,000 children over a Qwen-sized vocabulary."""
    vocab = 151_936
    cat = synthetic_catalog(
        62_000, vocab, seed=4, heads=60_000, alphabet=None, max_len=3, wide_root=True
    )
    paths = cat.paths()
    trie = ItemTrie.from_token_ids(paths, vocab_size=vocab)
    assert trie.max_fanout >= 50_000
    prefixes = [p[:2] for p in paths[::7]]
    rows = torch.tensor([p + [0] * (2 - len(p)) for p in prefixes], dtype=torch.int64)
    lengths = torch.tensor([len(p) for p in prefixes], dtype=torch.int64)
    got = trie.to(backend).walk(rows.to(backend), lengths.to(backend)).cpu().tolist()
    want = _reference_walk(ReferenceTrie(paths), trie, prefixes)
    assert got == _cpu_walk(trie, rows, lengths) == want
    assert min(want) > 0


def test_walk_empty_and_off_trie(backend: str) -> None:
    """No rows; a token off the trie, the empty row (root) and tokens after a leaf."""
    trie = ItemTrie.from_token_ids(EXAMPLE_PATHS, EXAMPLE_WEIGHTS).to(backend)
    assert trie.walk(torch.zeros((0, 3), dtype=torch.int64, device=backend)).numel() == 0
    got = trie.walk([[10, 11], [99], [], [20, 21, 2], [20, 21, 2, 5]]).cpu().tolist()
    assert got[1] == -1 and got[4] == -1
    assert got[2] == 0 and got[0] > 0 and got[3] > 0


def test_native_view_keeps_its_arrays_alive() -> None:
    """A native view outlives its ItemTrie object: walk_paths still reads valid arrays."""
    view = ItemTrie.from_token_ids(EXAMPLE_PATHS, EXAMPLE_WEIGHTS).native_view()
    gc.collect()
    tokens = torch.tensor([[10, 11, 13]], dtype=torch.int64)
    out = torch.empty(1, dtype=torch.int32)
    assert _C.walk_paths(view, tokens.data_ptr(), 1, 3, 3, 0, out.data_ptr(), 0, 0) is None
    assert view.owner.token[int(out[0])] == 13 and view.owner.depth[int(out[0])] == 3
