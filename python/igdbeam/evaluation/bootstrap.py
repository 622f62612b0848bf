"""Per-row metrics, 95% bootstrap intervals and paired differences for recommendation results.

Every metric of :func:`igdbeam.evaluation.metrics.evaluate_recommendations` is a function of
the test rows, so one bootstrap serves them all: resample the rows with replacement
``num_resamples`` times and recompute. Paired differences resample the *same* rows for both
methods, which is what tells a reader whether a gap between two decoders on one test set is
signal: the interval of the difference is much narrower than the two intervals side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from igdbeam.evaluation.metrics import first_tokens, hit_ranks

# The metrics the experiment reports: accuracy per row, diversity per list set.
ACCURACY = ("NDCG@5", "NDCG@10", "HR@5", "HR@10")
DIVERSITY = ("coverage", "mean_top_first_token_share", "mean_popularity")
REPORTED = ACCURACY + DIVERSITY


class RowMetrics:
    """The recommendations of one method on the test rows, ready to be resampled.

    Args:
        ranked: ``[rows, K]`` catalog item ids (``-1`` = empty slot).
        targets: ``[rows]`` catalog item ids of the ground truth.
        trie: the trie (hits are matched through leaves; diversity uses its first tokens).
        popularity: ``[num_items]`` training-target counts (for ``mean_popularity``).
    """

    def __init__(
        self, ranked: np.ndarray, targets: np.ndarray, trie: Any, popularity: np.ndarray
    ) -> None:
        """Compute each row's hit rank once; see the class docstring."""
        self.ranked = np.asarray(ranked, dtype=np.int64)[:, :10]
        self.ranks = hit_ranks(np.asarray(ranked, dtype=np.int64), targets, trie)
        self.num_items = int(trie.num_items)
        pop = np.asarray(popularity, dtype=np.float64)
        valid = self.ranked >= 0
        safe = np.where(valid, self.ranked, 0)
        # Per-row pieces of the list-level metrics, so a resample costs a few array ops.
        self._count = valid.sum(axis=1).astype(np.float64)
        self._pop_sum = np.where(valid, pop[safe], 0.0).sum(axis=1)
        ft = np.where(valid, first_tokens(trie)[safe], -2)
        top = np.zeros(len(self.ranked))
        for r, toks in enumerate(ft):
            toks = toks[toks != -2]
            if toks.size:
                top[r] = np.unique(toks, return_counts=True)[1].max() / toks.size
        self._top_share = top

    def __len__(self) -> int:
        return int(self.ranks.shape[0])

    def per_row(self, name: str) -> np.ndarray:
        """The per-row values of an accuracy metric (``NDCG@K`` or ``HR@K``)."""
        kind, k = name.split("@")
        hit = (self.ranks >= 0) & (self.ranks < int(k))
        if kind == "HR":
            return hit.astype(np.float64)
        return np.where(hit, 1.0 / np.log2(self.ranks.clip(min=0) + 2.0), 0.0)

    def values(self, rows: np.ndarray | None = None) -> dict[str, float]:
        """Every reported metric on the given rows (all rows when None; repeats allowed).

        Accuracy as :func:`igdbeam.evaluation.metrics.ranking_metrics`, the list-level metrics of
        the top 10 as :func:`igdbeam.evaluation.metrics.diversity_metrics` (same definitions,
        computed from per-row pieces so that a bootstrap resample is cheap).
        """
        idx = np.arange(len(self)) if rows is None else rows
        out = {m: float(self.per_row(m)[idx].mean()) if idx.size else 0.0 for m in ACCURACY}
        rec = self.ranked[idx]
        nonempty = self._count[idx] > 0
        out["coverage"] = float(np.unique(rec[rec >= 0]).size / self.num_items)
        out["mean_top_first_token_share"] = (
            float(self._top_share[idx][nonempty].mean()) if nonempty.any() else 0.0
        )
        total = self._count[idx].sum()
        out["mean_popularity"] = float(self._pop_sum[idx].sum() / total) if total else 0.0
        return out


def resample_indices(num_rows: int, num_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """``[num_resamples, num_rows]`` row indices drawn with replacement (one shared draw)."""
    if num_rows <= 0:
        raise ValueError("cannot bootstrap zero rows")
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_rows, size=(num_resamples, num_rows))


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def bootstrap(
    statistic: Callable[[np.ndarray | None], Mapping[str, float]],
    draws: np.ndarray,
    level: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Point estimate and percentile interval of every metric ``statistic(rows)`` returns.

    ``statistic(None)`` is the estimate on all rows; ``statistic(draws[b])`` the resample ``b``.

    Returns:
        ``{metric: {"value": v, "low": lo, "high": hi}}``.
    """
    point = statistic(None)
    samples = [statistic(d) for d in draws]
    out = {}
    for name, value in point.items():
        lo, hi = _interval(np.asarray([s[name] for s in samples]), level)
        out[name] = {"value": float(value), "low": lo, "high": hi}
    return out


def mean_over(methods: Sequence[RowMetrics]) -> Callable[[np.ndarray | None], dict[str, float]]:
    """A statistic that averages each metric over several runs (seeds) on the same rows."""

    def stat(rows: np.ndarray | None) -> dict[str, float]:
        vals = [m.values(rows) for m in methods]
        return {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}

    return stat


def paired_difference(
    a: Callable[[np.ndarray | None], Mapping[str, float]],
    b: Callable[[np.ndarray | None], Mapping[str, float]],
) -> Callable[[np.ndarray | None], dict[str, float]]:
    """The statistic ``a(rows) - b(rows)``: bootstrapped, a paired-difference interval."""

    def stat(rows: np.ndarray | None) -> dict[str, float]:
        va, vb = a(rows), b(rows)
        return {k: float(va[k] - vb[k]) for k in va}

    return stat
