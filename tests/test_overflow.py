"""Entropy and IG are exact for any finite positive weights, at every scale (1e-323 .. 1.8e308),
and a trie that saves always loads.

The reference works in log space (``ln p_i = ln w_i - logsumexp(ln w)``, ``math.fsum``), so it
never forms a sum of weights and cannot overflow or underflow; it is independent of igdbeam.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from factories.catalogs import EXAMPLE_PATHS, synthetic_catalog
from igdbeam import ItemTrie, TrieFormatError

DBL_MAX = float(np.finfo(np.float64).max)


def _logsumexp(logs: list[float]) -> float:
    m = max(logs)
    return m + math.log(math.fsum(math.exp(x - m) for x in logs))


def reference(
    paths: list[list[int]], weights: list[float], entropy: str
) -> dict[tuple[int, ...], float]:
    """``{prefix: H(prefix)}`` in float64 from the log-weights (zero weights carry no mass).

    Duplicate titles are one outcome (one leaf) whose weight is the sum of theirs (spec 1).
    """
    leaf_logs: dict[tuple[int, ...], list[float]] = {}
    for path, w in zip(paths, weights, strict=True):
        if w > 0:
            leaf_logs.setdefault(tuple(path), []).append(math.log(w))
    logs = {leaf: _logsumexp(ls) for leaf, ls in leaf_logs.items()}
    log_total = _logsumexp(list(logs.values()))
    below: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for path in {tuple(p) for p in paths}:
        for d in range(len(path) + 1):
            below.setdefault(path[:d], []).append(path)
    out = {}
    for prefix, items in below.items():
        lw = [logs[i] for i in items if i in logs]
        if not lw:
            out[prefix] = 0.0
            continue
        norm = log_total if entropy == "global" else _logsumexp(lw)
        out[prefix] = -math.fsum(math.exp(x - norm) * (x - norm) for x in lw)
    return out


def node_prefixes(trie: ItemTrie) -> list[tuple[int, ...]]:
    tokens, parents = trie.token.tolist(), trie.parent.tolist()
    prefixes: list[tuple[int, ...]] = [()]
    for node in range(1, trie.num_nodes):
        prefixes.append(prefixes[parents[node]] + (tokens[node],))
    return prefixes


def assert_matches_reference(
    trie: ItemTrie, paths: list[list[int]], weights: list[float], entropy: str
) -> None:
    ref = reference(paths, weights, entropy)
    prefixes = node_prefixes(trie)
    h = trie.entropy.double().numpy()
    ig = trie.info_gain.double().numpy()
    zero = trie.zero_ig.numpy()
    parents = trie.parent.tolist()
    want_h = np.array([ref[p] for p in prefixes])
    np.testing.assert_allclose(h, want_h, rtol=2e-6, atol=1e-7)
    assert float(h[0]) > 0.1  # the root of these catalogs has real entropy: never 0
    for node in range(1, trie.num_nodes):
        want = 0.0 if zero[node] else ref[prefixes[parents[node]]] - ref[prefixes[node]]
        assert ig[node] == pytest.approx(want, rel=2e-6, abs=2e-7), prefixes[node]


CATALOG = synthetic_catalog(40, seed=3, duplicates=(0, 5, 5))
BASE = [float(1 + (7 * i) % 13) for i in range(CATALOG.num_items)]


@pytest.mark.parametrize("entropy", ["global", "conditional"])
@pytest.mark.parametrize(
    "scale",
    [
        DBL_MAX / 13,  # the largest weight is DBL_MAX: the sum is ~15x past float64's range
        1e307,
        2.0**1000,
        1e300,
        1.0,
        1e-300,
        1e-310,  # subnormal weights
        5e-324,  # the smallest positive float: weights 1..13 ulps of 0
    ],
)
def test_entropy_and_ig_exact_at_every_scale(scale: float, entropy: str) -> None:
    weights = [b * scale for b in BASE]
    assert all(math.isfinite(w) and w > 0 for w in weights)
    paths = CATALOG.paths()
    trie = ItemTrie.from_token_ids(paths, weights, entropy=entropy)
    assert_matches_reference(trie, paths, weights, entropy)
    # The probabilities do not depend on the scale: every table equals the unscaled one.
    plain = ItemTrie.from_token_ids(paths, BASE, entropy=entropy)
    for name in ("entropy", "info_gain", "info_gain_norm", "zero_ig"):
        torch.testing.assert_close(trie.array(name), plain.array(name), rtol=1e-6, atol=1e-7)
    stats, plain_stats = trie.stats(), plain.stats()
    for key in ("zero_ig_token_share", "zero_ig_token_share_uniform", "root_entropy"):
        assert stats[key] == pytest.approx(plain_stats[key], rel=1e-12), key


@pytest.mark.parametrize(
    "scale",
    [2.0**1000, 2.0**1020, 2.0**-1000, 2.0**-1074],
    ids=["2^1000", "2^1020", "2^-1000", "2^-1074"],
)
def test_power_of_two_scales_give_bit_identical_tables(scale: float) -> None:
    """Scaling by a power of two is exact, so the tables equal the unscaled ones bit for bit."""
    paths = CATALOG.paths()
    trie = ItemTrie.from_token_ids(paths, [b * scale for b in BASE])
    plain = ItemTrie.from_token_ids(paths, BASE)
    for name in ("entropy", "info_gain", "info_gain_norm", "zero_ig"):
        assert torch.equal(trie.array(name), plain.array(name)), name


def test_wide_span_of_weights_and_zero_weights() -> None:
    """The largest and smallest floats in one catalog, and zero weights: the reference values,
    and the zero-IG edges decided by which weights are exactly 0 (a 5e-324 weight next to
    DBL_MAX still makes its sibling's edge carry information)."""
    paths = [[10, 11, 2], [10, 12, 2], [20, 21, 2], [20, 22, 2], [30, 2], [40, 2]]
    weights = [DBL_MAX, 5e-324, DBL_MAX / 3, 0.0, 1e-300, DBL_MAX / 7]
    trie = ItemTrie.from_token_ids(paths, weights)
    assert_matches_reference(trie, paths, weights, "global")
    prefixes = node_prefixes(trie)
    zero = {prefixes[n] for n in range(1, trie.num_nodes) if trie.zero_ig[n]}
    assert (10, 11) not in zero and (10, 12) not in zero  # 5e-324 > 0: a real sibling
    assert (20, 21) in zero and (20, 22) not in zero  # its sibling weighs exactly 0
    assert (20, 22) in {prefixes[n] for n in range(1, trie.num_nodes)}


def test_duplicate_titles_at_the_top_of_float64_save_and_load(tmp_path: Path) -> None:
    """Two items with one title and weight 1e308 each: the leaf's weight would be inf."""
    paths = [[1, 2], [1, 2], [3, 2], *EXAMPLE_PATHS]
    weights = [1e308, 1e308, 1e308, 1e308, 5e307, 1e307, DBL_MAX]
    trie = ItemTrie.from_token_ids(paths, weights)
    assert_matches_reference(trie, paths, weights, "global")
    leaf_weight = trie.array("leaf_weight").numpy()
    assert np.isfinite(leaf_weight).all() and (leaf_weight > 0).all()
    path = tmp_path / "huge.igdtrie"
    trie.save(path)
    for mmap in (True, False):
        again = ItemTrie.load(path, mmap=mmap)
        for name, arr in trie.arrays().items():
            assert torch.equal(again.array(name), arr), name
    stats = trie.stats()
    assert all(math.isfinite(v) for v in stats.values())


def test_save_refuses_a_trie_that_load_would_refuse(tmp_path: Path) -> None:
    """A trie wrapped from arrays by hand (here: an infinite leaf weight) is refused by save,
    and nothing is written."""
    trie = ItemTrie.from_token_ids(EXAMPLE_PATHS, [4, 2, 1, 1])
    arrays = trie.arrays()
    arrays["leaf_weight"] = arrays["leaf_weight"].clone()
    arrays["leaf_weight"][0] = math.inf
    bad = ItemTrie(arrays, trie.meta)
    path = tmp_path / "bad.igdtrie"
    with pytest.raises(TrieFormatError, match="refusing to save an invalid trie.*leaf_weight"):
        bad.save(path)
    assert list(tmp_path.iterdir()) == []
