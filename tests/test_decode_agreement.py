"""List agreement and paired differences between two decodes of the same rows."""

from __future__ import annotations

import numpy as np
import pytest

from igdbeam import ItemTrie
from igdbeam.evaluation.decode_agreement import agreement_table, compare_decodes, list_agreement
from igdbeam.evaluation.metrics import ranking_metrics


@pytest.fixture
def tiny_trie() -> ItemTrie:
    """30 items of two-token titles."""
    return ItemTrie.from_token_ids([[3 + i // 6, 20 + i % 6, 2] for i in range(30)])


def test_list_agreement_by_hand() -> None:
    a = np.array([[1, 2, 3], [4, 5, 6], [7, 8, -1]])
    b = np.array([[1, 2, 3], [6, 5, 9], [7, -1, -1]])
    got = list_agreement(a, b, k=3)
    assert got["identical"] == pytest.approx(1 / 3)
    # row 0: 3 of 3 shared; row 1: {5, 6} of 3; row 2: {7} of its 2 items.
    assert got["overlap"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    with pytest.raises(ValueError, match="same rows"):
        list_agreement(a, b[:2])


def test_compare_decodes_against_a_direct_computation(tiny_trie) -> None:
    rng = np.random.default_rng(0)
    n_items = tiny_trie.num_items
    rows = 60
    targets = rng.integers(0, n_items, size=rows)
    users = [f"u{i % 7}" for i in range(rows)]
    mine = np.stack([rng.permutation(n_items)[:10] for _ in range(rows)])
    theirs = mine.copy()
    theirs[::3] = np.roll(theirs[::3], 1, axis=1)  # every third row reordered
    popularity = np.ones(n_items)
    records = compare_decodes(
        {"plain-s0": {"d3": mine}},
        {"plain-s0": {"d3": theirs}, "igd-s0": {"d3": theirs}},
        targets,
        users,
        tiny_trie,
        popularity,
        num_resamples=200,
    )
    assert len(records) == 1  # only the run both hold
    r = records[0]
    assert r["identical"] == pytest.approx(1 - len(range(0, rows, 3)) / rows)
    assert r["overlap"] == pytest.approx(1.0)
    ref_mine = ranking_metrics(mine, targets, trie=tiny_trie, ks=(10,))["NDCG@10"]
    ref_theirs = ranking_metrics(theirs, targets, trie=tiny_trie, ks=(10,))["NDCG@10"]
    d = r["metrics"]["NDCG@10"]["difference"]
    assert r["metrics"]["NDCG@10"]["mine"] == pytest.approx(ref_mine)
    assert d["value"] == pytest.approx(ref_mine - ref_theirs)
    assert d["low"] <= d["value"] <= d["high"]
    # Reordering inside the top 10 changes no HR@10.
    h = r["metrics"]["HR@10"]["difference"]
    assert h["value"] == 0.0 and h["low"] == 0.0 and h["high"] == 0.0
    table = agreement_table(records, "float32", "bfloat16")
    assert "decoded in bfloat16 (60 rows decoded by both)" in table
    assert f"| plain-s0 | d3 | {100 * r['identical']:.1f}% | 100.0% |" in table
