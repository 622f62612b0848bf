"""Per-row metrics, user-clustered 95% bootstrap intervals, paired differences and the minimum
detectable effect of recommendation results.

**Why clustered.** A time-split test set holds many rows per user (MovieLens-100k: 9,907 test
rows from 166 users). Rows of one user share the user's taste and history, so they are not
independent; a bootstrap that resamples rows treats them as if they were and gives intervals that
are too narrow. :class:`ClusteredBootstrap` resamples *users* with replacement and keeps every row
of a drawn user (the cluster bootstrap). With one row per user it is the ordinary row bootstrap.

**Why paired.** Every method is scored on the same rows, so a difference between two methods is
resampled with the *same* drawn users for both: the interval of the difference is much narrower
than the two intervals side by side, and it is what says whether a gap is signal.

**What is resampled.** Every reported metric except coverage is a ratio of sums over rows
(NDCG/HR: sum of per-row gains / rows; mean popularity: sum of recommended items' counts / slots;
top-first-token share: sum over non-empty lists / non-empty lists), so a resample is the ratio of
the per-user sums weighted by how often each user was drawn: a matrix product, cheap for
thousands of rows and resamples.

**Coverage has no interval.** Catalog coverage (distinct recommended items / catalog size) is
not an average over rows but a count of distinct items that grows with the number of rows. A
resample of ``n`` rows drawn with replacement holds only about 63% distinct rows, so its coverage
is biased low and the percentile interval lies below the estimate (it did in every cell of the
first report). No resampling scheme of the rows estimates the sampling error of a distinct count
without a model of the catalog, so coverage is reported as the exact value on these rows, with no
interval; compare it only between methods on the same rows (as every table does).

**Minimum detectable effect.** For a paired comparison with clustered standard error ``SE`` (the
standard deviation of the bootstrap replicates of the difference), the smallest true difference a
two-sided 5% test detects with 80% power is ``(z_0.975 + z_0.80) * SE = 2.80 * SE``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from igdbeam.evaluation.metrics import first_tokens, hit_ranks

# The metrics the experiment reports: accuracy per row, diversity per list set.
ACCURACY = ("NDCG@5", "NDCG@10", "HR@5", "HR@10")
DIVERSITY = ("coverage", "mean_top_first_token_share", "mean_popularity")
REPORTED = ACCURACY + DIVERSITY
# Reported as the exact value on the rows, without an interval (see the module docstring).
NO_INTERVAL = ("coverage",)
# The resampled metrics: ratios of per-row sums.
RESAMPLED = tuple(m for m in REPORTED if m not in NO_INTERVAL)

LEVEL = 0.95
POWER = 0.80


def mde_factor(level: float = LEVEL, power: float = POWER) -> float:
    """``z_{1-(1-level)/2} + z_power``: 2.80 for a two-sided 5% test at 80% power."""
    z = NormalDist().inv_cdf
    return float(z(1 - (1 - level) / 2) + z(power))


class RowMetrics:
    """The recommendations of one method on the test rows, ready to be resampled.

    Args:
        ranked: ``[rows, K]`` catalog item ids (``-1`` = empty slot); the top 10 are scored.
        targets: ``[rows]`` catalog item ids of the ground truth.
        trie: the trie (hits are matched through leaves; diversity uses its first tokens).
        popularity: ``[num_items]`` training-target counts (for ``mean_popularity``).
    """

    def __init__(
        self, ranked: np.ndarray, targets: np.ndarray, trie: Any, popularity: np.ndarray
    ) -> None:
        """Compute each row's hit rank and list statistics once; see the class docstring."""
        self.ranked = np.asarray(ranked, dtype=np.int64)[:, :10]
        self.ranks = hit_ranks(self.ranked, targets, trie)
        self.num_items = int(trie.num_items)
        pop = np.asarray(popularity, dtype=np.float64)
        valid = self.ranked >= 0
        safe = np.where(valid, self.ranked, 0)
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

    def ratio_parts(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{metric: (numerator [rows], denominator [rows])}`` of every resampled metric: the
        metric on any multiset of rows is ``sum(numerator) / sum(denominator)`` over it (0 when
        the denominator sums to 0)."""
        ones = np.ones(len(self))
        parts = {m: (self.per_row(m), ones) for m in ACCURACY}
        parts["mean_top_first_token_share"] = (self._top_share, (self._count > 0).astype(float))
        parts["mean_popularity"] = (self._pop_sum, self._count)
        return parts

    def coverage(self) -> float:
        """Distinct recommended items (top 10, all rows) / catalog size."""
        rec = self.ranked[self.ranked >= 0]
        return float(np.unique(rec).size / self.num_items)

    def values(self) -> dict[str, float]:
        """Every reported metric on all rows.

        Accuracy as :func:`igdbeam.evaluation.metrics.ranking_metrics`, the list-level metrics of
        the top 10 as :func:`igdbeam.evaluation.metrics.diversity_metrics`.
        """
        out = {}
        for m, (num, den) in self.ratio_parts().items():
            out[m] = float(num.sum() / den.sum()) if den.sum() > 0 else 0.0
        out["coverage"] = self.coverage()
        return {m: out[m] for m in REPORTED}


def draw_clusters(num_clusters: int, num_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """``[num_resamples, num_clusters]``: the clusters drawn with replacement in each resample."""
    if num_clusters <= 0:
        raise ValueError("cannot bootstrap zero rows")
    if num_resamples <= 1:
        raise ValueError(f"need at least 2 resamples, got {num_resamples}")
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_clusters, size=(num_resamples, num_clusters))


class ClusteredBootstrap:
    """Resamples of the test rows' users (clusters), shared by every method and difference.

    Args:
        clusters: one label per test row (the user id); rows with equal labels are resampled
            together. None: every row is its own cluster (the row bootstrap).
        num_rows: the number of rows when ``clusters`` is None.
        num_resamples: bootstrap resamples.
        seed: seed of the draws (the same seed gives the same resamples).
        level: interval level (0.95: the 2.5% and 97.5% percentiles).
    """

    def __init__(
        self,
        clusters: Sequence[Hashable] | None = None,
        *,
        num_rows: int | None = None,
        num_resamples: int = 1000,
        seed: int = 0,
        level: float = LEVEL,
    ) -> None:
        """Label the rows' clusters and draw the resamples; see the class docstring."""
        if clusters is None:
            if num_rows is None:
                raise ValueError("give the rows' clusters or num_rows")
            codes = np.arange(int(num_rows), dtype=np.int64)
        else:
            index: dict[Hashable, int] = {}
            codes = np.asarray([index.setdefault(c, len(index)) for c in clusters], np.int64)
            if num_rows is not None and num_rows != codes.size:
                raise ValueError(f"{codes.size} cluster labels for {num_rows} rows")
        self.codes = codes
        self.num_rows = int(codes.size)
        self.num_clusters = int(codes.max()) + 1 if codes.size else 0
        self.clustered = clusters is not None and self.num_clusters < self.num_rows
        self.num_resamples = int(num_resamples)
        self.level = float(level)
        self.draws = draw_clusters(self.num_clusters, num_resamples, seed)
        # How often each cluster is drawn in each resample: [num_resamples, num_clusters].
        counts = np.zeros((self.num_resamples, self.num_clusters), dtype=np.float64)
        np.add.at(counts, (np.arange(self.num_resamples)[:, None], self.draws), 1.0)
        self.counts = counts

    def describe(self) -> str:
        """One phrase for a table header: the level, the scheme and the sizes."""
        pct = f"{100 * self.level:g}%"
        if self.clustered:
            return (
                f"{pct} percentile bootstrap clustered by user ({self.num_resamples} resamples of "
                f"the {self.num_clusters} users, every row of a drawn user kept)"
            )
        return f"{pct} percentile bootstrap over rows ({self.num_resamples} resamples)"

    def _check(self, method: RowMetrics) -> None:
        if len(method) != self.num_rows:
            raise ValueError(f"a method has {len(method)} rows, the resamples {self.num_rows}")

    def replicates(self, methods: RowMetrics | Sequence[RowMetrics]) -> dict[str, np.ndarray]:
        """``{metric: [num_resamples + 1]}``: the point estimate (index 0, all rows once) then
        each resample's value, for every resampled metric; several methods (seeds on the same
        rows) are averaged per resample."""
        runs = [methods] if isinstance(methods, RowMetrics) else list(methods)
        if not runs:
            raise ValueError("no method to resample")
        weights = np.vstack([np.ones((1, self.num_clusters)), self.counts])
        total: dict[str, np.ndarray] = {}
        for run in runs:
            self._check(run)
            for m, (num, den) in run.ratio_parts().items():
                cnum = np.bincount(self.codes, weights=num, minlength=self.num_clusters)
                cden = np.bincount(self.codes, weights=den, minlength=self.num_clusters)
                n, d = weights @ cnum, weights @ cden
                value = np.divide(n, d, out=np.zeros_like(n), where=d > 0)
                total[m] = total.get(m, 0.0) + value
        return {m: v / len(runs) for m, v in total.items()}

    def interval(self, reps: np.ndarray) -> dict[str, float]:
        """``{"value", "low", "high", "se"}`` from :meth:`replicates`-style values."""
        lo, hi = np.quantile(reps[1:], [(1 - self.level) / 2, 1 - (1 - self.level) / 2])
        return {
            "value": float(reps[0]),
            "low": float(lo),
            "high": float(hi),
            "se": float(np.std(reps[1:], ddof=1)),
        }

    def summary(self, methods: RowMetrics | Sequence[RowMetrics]) -> dict[str, dict[str, Any]]:
        """Every reported metric: ``{"value", "low", "high", "se"}``; coverage (mean over the
        methods) with ``low = high = se = None`` (no interval, see the module docstring)."""
        runs = [methods] if isinstance(methods, RowMetrics) else list(methods)
        reps = self.replicates(runs)
        out: dict[str, dict[str, Any]] = {}
        for m in REPORTED:
            if m in NO_INTERVAL:
                cov = float(np.mean([r.coverage() for r in runs]))
                out[m] = {"value": cov, "low": None, "high": None, "se": None}
            else:
                out[m] = self.interval(reps[m])
        return out

    def difference(
        self,
        a: RowMetrics | Sequence[RowMetrics],
        b: RowMetrics | Sequence[RowMetrics],
        metrics: Sequence[str] = ACCURACY,
        *,
        power: float = POWER,
    ) -> dict[str, dict[str, float]]:
        """Paired ``a - b`` on the same resampled users, per metric.

        Returns:
            ``{metric: {"value", "low", "high", "se", "mde", "mde_relative"}}``: the difference
            on all rows, its percentile interval, its clustered standard error, the minimum
            detectable effect ``mde_factor(level, power) * se`` and that effect relative to
            ``b``'s value (NaN when ``b`` is 0).
        """
        ra, rb = self.replicates(a), self.replicates(b)
        factor = mde_factor(self.level, power)
        out: dict[str, dict[str, float]] = {}
        for m in metrics:
            d = self.interval(ra[m] - rb[m])
            d["mde"] = factor * d["se"]
            ref = float(rb[m][0])
            d["mde_relative"] = d["mde"] / ref if ref > 0 else float("nan")
            out[m] = d
        return out


def excludes_zero(d: Mapping[str, Any]) -> bool:
    """True when the interval of a difference lies entirely above or below 0."""
    return bool(d["low"] > 0 or d["high"] < 0)
