"""Helpers of the item-filter tests: the brute-force node-array reference (it enumerates the
catalog's items with ``oracles.trie.ReferenceTrie`` and never uses igdbeam's node arrays), a
small catalog with a duplicate title, and the filter pointers the native steps take."""

from __future__ import annotations

import math

from factories.catalogs import synthetic_catalog
from igdbeam.ops.node_filters import NodeFilters
from oracles.trie import ReferenceTrie

NEG_INF = -math.inf


def lse(values: list[float]) -> float:
    """The log-sum-exp of ``values`` in float64; -inf when every value is -inf."""
    finite = [v for v in values if v != NEG_INF]
    if not finite:
        return NEG_INF
    m = max(finite)
    return m + math.log(sum(math.exp(v - m) for v in finite))


def items_below(ref: ReferenceTrie, prefix: tuple[int, ...]) -> list[int]:
    """The item ids whose paths start with ``prefix``."""
    return [i for path in ref.below[prefix] for i in ref.items_of_leaf[path]]


def ref_node_arrays(ref, mask_row, score_row):
    """{prefix: (allowed, S)} for one request, by enumerating the items below each prefix."""
    out = {}
    for prefix in ref.prefixes():
        items = [i for i in items_below(ref, prefix) if mask_row is None or mask_row[i]]
        s = lse([float(score_row[i]) for i in items]) if score_row is not None else None
        out[prefix] = (bool(items), s)
    return out


def node_of(trie, prefix) -> int:
    """The node of ``prefix`` in ``trie`` (-1 when off the trie)."""
    return int(trie.walk([list(prefix)])[0])


def filter_catalog(
    num_items: int = 30, vocab: int = 80, seed: int = 31
) -> tuple[list[list[int]], list[int]]:
    """A small synthetic catalog and its weights; a duplicate title: items 3 and num_items share
    a leaf."""
    paths = synthetic_catalog(num_items, vocab, seed=seed, duplicates=(3,)).paths()
    weights = [1 + i % 4 for i in range(len(paths))]
    return paths, weights


def filter_ptrs(f, rows):
    """The filter arguments of a native decode step: mask, scores, weight, rows, row stride."""
    return (
        f.mask_words.data_ptr() if f.mask_words is not None else 0,
        f.node_scores.data_ptr() if f.node_scores is not None else 0,
        float(f.score_weight),
        rows.data_ptr(),
        int(f.node_scores.shape[1] if f.node_scores is not None else f.mask_words.shape[1]),
    )


def filters_to_cuda(f: NodeFilters) -> NodeFilters:
    """The filters with both arrays on the GPU."""
    return NodeFilters(f.mask_words.cuda(), f.node_scores.cuda(), f.score_weight, f.num_rows)
