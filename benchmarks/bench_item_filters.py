"""Per-request item filters: the native per-node build against a torch baseline.

Run: ``PYTHONPATH=python python -m pytest benchmarks/bench_item_filters.py -q -s``
(``IGDBEAM_BENCH_QUICK=1``: 20k items, 8 rows).

What a user would otherwise write is the same reduction in torch, level by level: the item mask
is scattered onto the leaves (``scatter_reduce(amax)`` over ``item_leaf``), then each depth level,
deepest first, is folded into the level above (a contiguous node range) with
``scatter_reduce(amax)`` over ``parent`` (for the CF scores: ``amax``, then ``scatter_add`` of
``exp(x - max)``, then ``log``). igdbeam does it in one native call (bit-parallel over 64 rows
for the mask, whose output is bit-packed: one bit per node and row;
:mod:`igdbeam.ops.node_filters`).

* mask: 1M items (titles of 4-13 tokens, Zipf words) x 64 rows, each row excluding 50 random
  items (a history);
* CF scores: the same catalog, 8 rows of random log-scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from benchmarks.conftest import QUICK
from factories.catalogs import synthetic_catalog
from igdbeam import ItemTrie, node_filters

NUM_ITEMS = 20_000 if QUICK else 1_000_000
MASK_ROWS = 8 if QUICK else 64
SCORE_ROWS = 4 if QUICK else 8
ROUNDS = 3


@pytest.fixture(scope="module")
def catalog() -> dict[str, Any]:
    titles = synthetic_catalog(NUM_ITEMS, 49_152, seed=1, zipf=1.2, min_len=3, max_len=12)
    trie = ItemTrie.from_csr(*titles.csr())
    depth = trie.depth.to(torch.int64)
    bounds = torch.searchsorted(depth, torch.arange(trie.max_depth + 2)).tolist()
    rng = np.random.default_rng(2)
    mask = torch.ones(MASK_ROWS, trie.num_items, dtype=torch.bool)
    for r in range(MASK_ROWS):
        mask[r, torch.from_numpy(rng.choice(trie.num_items, 50, replace=False))] = False
    scores = torch.from_numpy(rng.normal(size=(SCORE_ROWS, trie.num_items)).astype(np.float32))
    return {
        "trie": trie,
        "levels": [(bounds[d], bounds[d + 1]) for d in range(trie.max_depth + 1)],
        "parent": trie.parent.to(torch.int64),
        "item_leaf": trie.array("item_leaf").to(torch.int64),
        "mask": mask,
        "scores": scores,
    }


def _level_pairs(c: dict[str, Any]):
    """(child level range, parent level range, parent index within its level), deepest first."""
    levels, parent = c["levels"], c["parent"]
    for d in range(len(levels) - 1, 0, -1):
        (clo, chi), (plo, phi) = levels[d], levels[d - 1]
        yield (clo, chi), (plo, phi), parent[clo:chi] - plo


def torch_node_mask(c: dict[str, Any], item_mask: torch.Tensor) -> torch.Tensor:
    """The baseline: leaves from the items, then each level folded into the level above."""
    rows, n = item_mask.shape[0], c["trie"].num_nodes
    m = torch.zeros(rows, n, dtype=torch.uint8)
    m.scatter_reduce_(1, c["item_leaf"].expand(rows, -1), item_mask.to(torch.uint8), "amax")
    for (clo, chi), (plo, phi), idx in _level_pairs(c):
        m[:, plo:phi].scatter_reduce_(1, idx.expand(rows, -1), m[:, clo:chi], "amax")
    return m.bool()


def torch_node_scores(c: dict[str, Any], item_scores: torch.Tensor) -> torch.Tensor:
    """The baseline log-sum-exp: per level a max, a sum of exponentials and a log."""
    rows, n = item_scores.shape[0], c["trie"].num_nodes

    def lse_into(dst: torch.Tensor, idx: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        top = torch.full_like(dst, float("-inf")).scatter_reduce_(1, idx, src, "amax")
        exp = torch.exp(src - top.gather(1, idx)).nan_to_num_(0.0)
        total = torch.zeros_like(dst).scatter_add_(1, idx, exp)
        return torch.where(torch.isfinite(top), top + torch.log(total), dst)

    s = torch.full((rows, n), float("-inf"))
    s = lse_into(s, c["item_leaf"].expand(rows, -1), item_scores)
    for (clo, chi), (plo, phi), idx in _level_pairs(c):
        s[:, plo:phi] = lse_into(s[:, plo:phi], idx.expand(rows, -1), s[:, clo:chi])
    return s


def test_mask_native(benchmark: Any, ratios: Any, catalog: dict[str, Any]) -> None:
    trie, mask = catalog["trie"], catalog["mask"]
    want = torch_node_mask(catalog, mask)
    got = benchmark.pedantic(lambda: node_filters(trie, mask), rounds=ROUNDS)
    assert torch.equal(got.node_mask, want)
    ratios.record(
        f"node mask/{NUM_ITEMS} items x {MASK_ROWS} rows",
        "igdbeam",
        benchmark,
        nodes=trie.num_nodes,
        threads=torch.get_num_threads(),
    )


def test_mask_torch(benchmark: Any, ratios: Any, catalog: dict[str, Any]) -> None:
    mask = catalog["mask"]
    benchmark.pedantic(torch_node_mask, args=(catalog, mask), rounds=ROUNDS)
    ratios.record(f"node mask/{NUM_ITEMS} items x {MASK_ROWS} rows", "torch", benchmark)


def test_scores_native(benchmark: Any, ratios: Any, catalog: dict[str, Any]) -> None:
    trie, scores = catalog["trie"], catalog["scores"]
    want = torch_node_scores(catalog, scores)
    got = benchmark.pedantic(lambda: node_filters(trie, None, scores).node_scores, rounds=ROUNDS)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    ratios.record(f"node scores/{NUM_ITEMS} items x {SCORE_ROWS} rows", "igdbeam", benchmark)


def test_scores_torch(benchmark: Any, ratios: Any, catalog: dict[str, Any]) -> None:
    scores = catalog["scores"]
    benchmark.pedantic(torch_node_scores, args=(catalog, scores), rounds=ROUNDS)
    ratios.record(f"node scores/{NUM_ITEMS} items x {SCORE_ROWS} rows", "torch", benchmark)
