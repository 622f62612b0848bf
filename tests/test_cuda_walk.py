"""CUDA walk vs the C++ walk and the pure-Python reference trie (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import igdbeam
from cuda_testing import build, cuda_marks, random_catalog, wide_root_catalog
from oracles.trie import ReferenceTrie

pytestmark = cuda_marks


def _reference_walk(ref: ReferenceTrie, trie: igdbeam.ItemTrie, rows: list[list[int]]) -> list:
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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_walk_matches_cpu_and_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    paths, weights = random_catalog(rng, 300, alphabet=8)
    trie = build(paths, weights)
    gpu = trie.to("cuda")
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
    got_cpu = trie.walk(tokens, lengths)
    got_gpu = gpu.walk(tokens.cuda(), lengths.cuda())
    assert got_gpu.device.type == "cuda"
    assert got_gpu.cpu().tolist() == got_cpu.tolist() == want


def test_walk_without_lengths_and_strided_rows() -> None:
    rng = np.random.default_rng(3)
    paths, _ = random_catalog(rng, 100, min_len=3, max_len=3)
    trie = build(paths)
    full = torch.tensor([p + [7, 7] for p in paths[:50]], dtype=torch.int64)
    view = full[:, :2]  # row stride 6, two columns
    want = trie.walk(view.contiguous())
    assert trie.to("cuda").walk(view.cuda()).cpu().tolist() == want.tolist()
    assert (want >= 0).all()


def test_walk_wide_root() -> None:
    rng = np.random.default_rng(4)
    vocab = 151_936
    paths = wide_root_catalog(rng, 60_000, vocab)
    trie = build(paths, vocab=vocab)
    assert trie.max_fanout >= 50_000
    rows = torch.tensor([p[:2] for p in paths[::7]], dtype=torch.int64)
    want = trie.walk(rows)
    got = trie.to("cuda").walk(rows.cuda())
    assert got.cpu().tolist() == want.tolist()
    assert (want >= 0).all()


def test_walk_empty_and_off_trie() -> None:
    trie = build([[10, 11, 12, 2], [10, 11, 13, 2], [10, 14, 2], [20, 21, 2]]).to("cuda")
    assert trie.walk(torch.zeros((0, 3), dtype=torch.int64, device="cuda")).numel() == 0
    got = trie.walk([[10, 11], [99], [], [20, 21, 2], [20, 21, 2, 5]])
    assert got.cpu().tolist()[1] == -1 and got.cpu().tolist()[4] == -1
    assert got.cpu().tolist()[2] == 0
