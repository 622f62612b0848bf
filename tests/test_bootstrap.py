"""User-clustered bootstrap, paired differences and MDE against a slow direct implementation
and known cases."""

from __future__ import annotations

import numpy as np
import pytest

from igdbeam import ItemTrie
from igdbeam.evaluation.bootstrap import (
    ACCURACY,
    REPORTED,
    RESAMPLED,
    ClusteredBootstrap,
    RowMetrics,
    draw_clusters,
    mde_factor,
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
    targets = np.where(rng.random(rows) < 0.5, ranked[:, 0], rng.integers(0, trie.num_items, rows))
    targets = np.where(targets < 0, 0, targets)
    return ranked, targets


def _direct(
    ranked: np.ndarray, targets: np.ndarray, trie: ItemTrie, pop: np.ndarray, idx: np.ndarray
) -> dict[str, float]:
    """The reported metrics of the rows ``idx`` (repeats allowed) by the plain metric functions."""
    acc = ranking_metrics(ranked[idx], targets[idx], trie=trie, ks=(5, 10))
    div = diversity_metrics(
        ranked[idx], num_items=trie.num_items, k=10, first_token=first_tokens(trie), popularity=pop
    )
    return {**{m: acc[m] for m in ACCURACY}, **{m: div[m] for m in REPORTED if m in div}}


def test_row_metrics_match_the_metric_functions(catalog: ItemTrie) -> None:
    ranked, targets = _random_lists(catalog, 60, 0)
    pop = np.arange(catalog.num_items, dtype=np.float64) + 1
    mine = RowMetrics(ranked, targets, catalog, pop).values()
    ref = _direct(ranked, targets, catalog, pop, np.arange(60))
    assert list(mine) == list(REPORTED)
    for m in REPORTED:
        assert mine[m] == pytest.approx(ref[m], abs=1e-12), m


def test_clustered_replicates_equal_a_slow_direct_cluster_bootstrap(catalog: ItemTrie) -> None:
    """Each resample: concatenate every row of each drawn user (repeats included) and recompute
    every metric with the plain metric functions."""
    rng = np.random.default_rng(7)
    users = [f"u{u}" for u in rng.integers(0, 12, size=70)]  # 12 users, uneven row counts
    ranked, targets = _random_lists(catalog, 70, 1)
    pop = rng.integers(0, 50, size=catalog.num_items).astype(np.float64)
    rm = RowMetrics(ranked, targets, catalog, pop)
    boot = ClusteredBootstrap(users, num_resamples=40, seed=5)
    reps = boot.replicates(rm)
    order = list(dict.fromkeys(users))  # cluster k = the k-th distinct user
    assert boot.num_clusters == len(order) and boot.clustered
    rows_of = {u: [i for i, v in enumerate(users) if v == u] for u in order}
    for m in RESAMPLED:
        assert reps[m][0] == pytest.approx(_direct(ranked, targets, catalog, pop, np.arange(70))[m])
    for b in range(40):
        idx = np.asarray([i for k in boot.draws[b] for i in rows_of[order[k]]])
        ref = _direct(ranked, targets, catalog, pop, idx)
        for m in RESAMPLED:
            assert reps[m][b + 1] == pytest.approx(ref[m], abs=1e-12), (b, m)


def test_one_row_per_user_is_the_row_bootstrap(catalog: ItemTrie) -> None:
    ranked, targets = _random_lists(catalog, 50, 2)
    rm = RowMetrics(ranked, targets, catalog, np.ones(catalog.num_items))
    by_user = ClusteredBootstrap([f"u{i}" for i in range(50)], num_resamples=30, seed=4)
    by_row = ClusteredBootstrap(None, num_rows=50, num_resamples=30, seed=4)
    assert not by_user.clustered and not by_row.clustered
    # The same draws as a plain row bootstrap with numpy's generator...
    plain = np.random.default_rng(4).integers(0, 50, size=(30, 50))
    assert np.array_equal(by_user.draws, plain) and np.array_equal(by_row.draws, plain)
    # ...and the same values as recomputing on the drawn rows.
    reps = by_user.replicates(rm)
    for b in range(30):
        ref = ranking_metrics(ranked[plain[b]], targets[plain[b]], trie=catalog, ks=(10,))
        assert reps["NDCG@10"][b + 1] == pytest.approx(ref["NDCG@10"], abs=1e-12)


def test_interval_of_a_known_mean() -> None:
    """HR-like 0/1 rows with p = 0.3, one row per user: the 95% interval of the mean over 400
    rows is about 0.3 +- 1.96 * sqrt(0.21 / 400) = 0.3 +- 0.045; the standard error 0.0229."""
    trie = ItemTrie.from_token_ids([[3, 2], [4, 2]])
    ranked = np.zeros((400, 1), dtype=np.int64)
    targets = np.where(np.arange(400) < 120, 0, 1)
    rm = RowMetrics(ranked, targets, trie, np.ones(2))
    out = ClusteredBootstrap([str(i) for i in range(400)], num_resamples=4000, seed=1).summary(rm)
    hr = out["HR@10"]
    assert hr["value"] == pytest.approx(0.3)
    assert hr["low"] == pytest.approx(0.3 - 0.045, abs=0.006)
    assert hr["high"] == pytest.approx(0.3 + 0.045, abs=0.006)
    assert hr["se"] == pytest.approx(np.sqrt(0.21 / 400), rel=0.06)


def test_duplicated_users_widen_the_interval() -> None:
    """Every row copied 4 times under the same user: the clustered interval is exactly the one
    of the original rows (a user's rows move together), while a row bootstrap of the copies
    shrinks by about sqrt(4) = 2, the false precision the clustering removes."""
    trie = ItemTrie.from_token_ids([[3, 2], [4, 2]])
    rng = np.random.default_rng(0)
    hits = rng.random(300) < 0.2
    ranked = np.zeros((300, 1), dtype=np.int64)
    targets = np.where(hits, 0, 1)
    once = RowMetrics(ranked, targets, trie, np.ones(2))
    copies = RowMetrics(np.repeat(ranked, 4, axis=0), np.repeat(targets, 4), trie, np.ones(2))
    users = [f"u{i}" for i in range(300)]
    base = ClusteredBootstrap(users, num_resamples=2000, seed=3).summary(once)["HR@10"]
    dup_users = list(np.repeat(users, 4))
    clustered = ClusteredBootstrap(dup_users, num_resamples=2000, seed=3).summary(copies)["HR@10"]
    rows = ClusteredBootstrap(None, num_rows=1200, num_resamples=2000, seed=3).summary(copies)
    for key in ("value", "low", "high", "se"):
        assert clustered[key] == pytest.approx(base[key], abs=1e-12)
    width = clustered["high"] - clustered["low"]
    row_width = rows["HR@10"]["high"] - rows["HR@10"]["low"]
    assert 1.7 < width / row_width < 2.3
    assert rows["HR@10"]["value"] == pytest.approx(base["value"])


def test_paired_difference_mde_and_identity(catalog: ItemTrie) -> None:
    ranked, targets = _random_lists(catalog, 120, 4)
    users = [f"u{i // 3}" for i in range(120)]  # 40 users with 3 rows each
    pop = np.ones(catalog.num_items)
    a = RowMetrics(ranked, targets, catalog, pop)
    boot = ClusteredBootstrap(users, num_resamples=500, seed=2)
    same = boot.difference(a, RowMetrics(ranked.copy(), targets, catalog, pop))
    for m in ACCURACY:
        assert (same[m]["value"], same[m]["low"], same[m]["high"], same[m]["mde"]) == (0, 0, 0, 0)
    # b: the same lists with the first slot emptied, so b never beats a on any row.
    worse = ranked.copy()
    worse[:, 0] = -1
    b = RowMetrics(worse, targets, catalog, pop)
    d = boot.difference(a, b)
    ra, rb = boot.replicates(a), boot.replicates(b)
    for m in ACCURACY:
        diff = ra[m] - rb[m]
        assert d[m]["value"] == pytest.approx(a.values()[m] - b.values()[m])
        assert d[m]["se"] == pytest.approx(np.std(diff[1:], ddof=1))
        assert d[m]["low"] == pytest.approx(np.quantile(diff[1:], 0.025))
        assert d[m]["mde"] == pytest.approx(2.8016 * d[m]["se"], rel=1e-4)
        assert d[m]["mde_relative"] == pytest.approx(d[m]["mde"] / b.values()[m])
        assert d[m]["low"] >= 0  # a >= b on every row, so on every resample
    # Paired: narrower than either method's own interval.
    own = boot.summary(a)["HR@10"]
    assert d["HR@10"]["high"] - d["HR@10"]["low"] < own["high"] - own["low"]


def test_mde_factor_and_the_analytic_standard_error() -> None:
    # z_0.975 + z_0.80 from the normal table.
    assert mde_factor() == pytest.approx(1.959964 + 0.841621, abs=1e-6)
    assert mde_factor(0.95, 0.9) == pytest.approx(1.959964 + 1.281552, abs=1e-6)
    # Independent rows: the bootstrap SE of a paired difference of means is sd(d) / sqrt(n).
    trie = ItemTrie.from_token_ids([[3, 2], [4, 2]])
    rng = np.random.default_rng(9)
    ha, hb = rng.random(2000) < 0.3, rng.random(2000) < 0.2
    one = np.zeros((2000, 1), dtype=np.int64)
    a = RowMetrics(one, np.where(ha, 0, 1), trie, np.ones(2))
    b = RowMetrics(one, np.where(hb, 0, 1), trie, np.ones(2))
    d = ClusteredBootstrap(None, num_rows=2000, num_resamples=3000, seed=0).difference(a, b)
    se = np.std(ha.astype(float) - hb.astype(float), ddof=1) / np.sqrt(2000)
    assert d["HR@10"]["se"] == pytest.approx(se, rel=0.06)
    assert d["HR@10"]["mde"] == pytest.approx(mde_factor() * se, rel=0.06)


def test_coverage_is_reported_without_an_interval() -> None:
    """The estimate and no interval; and why: resampled coverage lies below the estimate."""
    trie = ItemTrie.from_token_ids([[3 + i // 20, 3 + i % 20, 2] for i in range(400)])
    rng = np.random.default_rng(6)
    ranked = np.stack([rng.choice(400, 10, replace=False) for _ in range(40)])
    rm = RowMetrics(ranked, ranked[:, 3], trie, np.ones(400))
    boot = ClusteredBootstrap([f"u{i}" for i in range(40)], num_resamples=200, seed=0)
    cov = boot.summary(rm)["coverage"]
    exact = diversity_metrics(ranked, num_items=400)["coverage"]
    assert cov == {"value": pytest.approx(exact), "low": None, "high": None, "se": None}
    resampled = [diversity_metrics(ranked[d], num_items=400)["coverage"] for d in boot.draws]
    assert np.quantile(resampled, 0.975) < exact  # the old interval excluded its own estimate
    # Every other metric's interval holds its estimate.
    for m, v in boot.summary(rm).items():
        if m != "coverage":
            assert v["low"] <= v["value"] <= v["high"], m


def test_mean_over_seeds_and_errors() -> None:
    trie = ItemTrie.from_token_ids([[3, 2], [4, 2], [5, 2]])
    targets = np.array([0, 1])
    hit = RowMetrics(np.array([[0, 1], [1, 0]]), targets, trie, np.ones(3))
    miss = RowMetrics(np.array([[2, -1], [2, -1]]), targets, trie, np.ones(3))
    boot = ClusteredBootstrap(["a", "b"], num_resamples=20, seed=0)
    reps = boot.replicates([hit, miss])
    assert reps["HR@5"][0] == pytest.approx(0.5) and reps["NDCG@10"][0] == pytest.approx(0.5)
    np.testing.assert_allclose(
        reps["HR@10"], (boot.replicates(hit)["HR@10"] + boot.replicates(miss)["HR@10"]) / 2
    )
    with pytest.raises(ValueError, match="zero rows"):
        draw_clusters(0)
    with pytest.raises(ValueError, match="3 cluster labels for 2 rows"):
        ClusteredBootstrap(["a", "b", "c"], num_rows=2)
    with pytest.raises(ValueError, match="has 2 rows, the resamples 3"):
        ClusteredBootstrap(["a", "b", "c"]).replicates(hit)
