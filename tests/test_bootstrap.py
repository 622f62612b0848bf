"""Per-row metrics and bootstrap intervals against the plain metric functions."""

from __future__ import annotations

import numpy as np
import pytest

from igdbeam import ItemTrie
from igdbeam.evaluation.bootstrap import (
    ACCURACY,
    RowMetrics,
    bootstrap,
    mean_over,
    paired_difference,
    resample_indices,
)
from igdbeam.evaluation.metrics import diversity_metrics, first_tokens, ranking_metrics


@pytest.fixture
def catalog() -> ItemTrie:
    rng = np.random.default_rng(3)
    paths = [[int(a), int(b), 2] for a, b in rng.integers(3, 12, size=(40, 2))]
    paths = [list(p) for p in {tuple(p) for p in paths}]
    return ItemTrie.from_token_ids(paths, weights=rng.integers(1, 9, size=len(paths)))


def _random_lists(trie: ItemTrie, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ranked = np.stack([rng.permutation(trie.num_items)[:10] for _ in range(rows)])
    ranked[rng.random(ranked.shape) < 0.1] = -1  # some empty slots
    targets = rng.integers(0, trie.num_items, size=rows)
    return ranked, targets


def test_row_metrics_match_the_metric_functions(catalog: ItemTrie) -> None:
    ranked, targets = _random_lists(catalog, 60, 0)
    pop = np.arange(catalog.num_items, dtype=np.float64) + 1
    rm = RowMetrics(ranked, targets, catalog, pop)
    mine = rm.values()
    ref = ranking_metrics(ranked, targets, trie=catalog, ks=(5, 10))
    for m in ACCURACY:
        assert mine[m] == pytest.approx(ref[m])
    div = diversity_metrics(
        ranked, num_items=catalog.num_items, k=10, first_token=first_tokens(catalog), popularity=pop
    )
    for m in ("coverage", "mean_top_first_token_share", "mean_popularity"):
        assert mine[m] == pytest.approx(div[m])
    # A resample with repeats is the metric of the repeated rows.
    idx = np.array([0, 0, 5, 7, 7, 7])
    again = rm.values(idx)
    ref = ranking_metrics(ranked[idx], targets[idx], trie=catalog, ks=(10,))
    assert again["NDCG@10"] == pytest.approx(ref["NDCG@10"])
    cov = np.unique(ranked[idx][ranked[idx] >= 0]).size / catalog.num_items
    assert again["coverage"] == pytest.approx(cov)


def test_bootstrap_interval_of_a_known_mean() -> None:
    # HR-like 0/1 rows with p = 0.3: the 95% interval of the mean over 400 rows is about
    # 0.3 +- 1.96 * sqrt(0.21 / 400) = 0.3 +- 0.045.
    values = np.zeros(400)
    values[:120] = 1.0
    draws = resample_indices(400, 2000, seed=1)
    out = bootstrap(
        lambda rows: {"m": float(values[rows].mean() if rows is not None else values.mean())}, draws
    )
    assert out["m"]["value"] == pytest.approx(0.3)
    assert out["m"]["low"] == pytest.approx(0.3 - 0.045, abs=0.01)
    assert out["m"]["high"] == pytest.approx(0.3 + 0.045, abs=0.01)


def test_paired_difference_is_exact_and_narrower(catalog: ItemTrie) -> None:
    ranked, targets = _random_lists(catalog, 80, 4)
    pop = np.ones(catalog.num_items)
    a = RowMetrics(ranked, targets, catalog, pop)
    same = RowMetrics(ranked.copy(), targets, catalog, pop)
    draws = resample_indices(80, 300, seed=2)
    diff = bootstrap(paired_difference(mean_over([a]), mean_over([same])), draws)
    for m in ACCURACY:
        assert diff[m] == {"value": 0.0, "low": 0.0, "high": 0.0}
    other_ranked, _ = _random_lists(catalog, 80, 5)
    b = RowMetrics(other_ranked, targets, catalog, pop)
    d = bootstrap(paired_difference(mean_over([b]), mean_over([a])), draws)["HR@10"]
    va, vb = a.values()["HR@10"], b.values()["HR@10"]
    assert d["value"] == pytest.approx(vb - va)
    assert d["low"] <= d["value"] <= d["high"]


def test_mean_over_seeds_averages() -> None:
    trie = ItemTrie.from_token_ids([[3, 2], [4, 2], [5, 2]])
    targets = np.array([0, 1])
    hit = RowMetrics(np.array([[0, 1], [1, 0]]), targets, trie, np.ones(3))
    miss = RowMetrics(np.array([[2, -1], [2, -1]]), targets, trie, np.ones(3))
    stat = mean_over([hit, miss])(None)
    assert stat["HR@5"] == pytest.approx(0.5)
    assert stat["NDCG@10"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="zero rows"):
        resample_indices(0)
