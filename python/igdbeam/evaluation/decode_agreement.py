"""How much two decodes of the same fine-tunes on the same rows agree (e.g. bfloat16 against
float32): identical top-10 lists, shared items, and the paired accuracy difference with a
user-clustered interval.

Used by ``igdbeam experiment --models-from`` when the other folder decoded the same models with
the same decoding settings in another precision: it says how far the precision alone moves the
lists and the metrics, at the size of the experiment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from igdbeam.evaluation.bootstrap import ClusteredBootstrap, RowMetrics
from igdbeam.evaluation.tables import format_difference

METRICS = ("NDCG@10", "HR@10")


def list_agreement(a: np.ndarray, b: np.ndarray, k: int = 10) -> dict[str, float]:
    """``identical``: share of rows whose top-``k`` lists are equal slot by slot; ``overlap``:
    mean share of a row's top-``k`` items found in the other list (any order); empty slots
    (``-1``) count as items only when both lists have them in the same slot."""
    a = np.asarray(a, dtype=np.int64)[:, :k]
    b = np.asarray(b, dtype=np.int64)[:, :k]
    if a.shape != b.shape:
        raise ValueError(f"lists of shapes {a.shape} and {b.shape} are not on the same rows")
    if a.shape[0] == 0:
        raise ValueError("no rows to compare")
    identical = float(np.mean(np.all(a == b, axis=1)))
    shared = [
        len(set(x[x >= 0].tolist()) & set(y[y >= 0].tolist())) / max(1, (x >= 0).sum())
        for x, y in zip(a, b, strict=True)
    ]
    return {"identical": identical, "overlap": float(np.mean(shared))}


def compare_decodes(
    mine: Mapping[str, Mapping[str, np.ndarray]],
    theirs: Mapping[str, Mapping[str, np.ndarray]],
    targets: np.ndarray,
    users: Sequence[Any],
    trie: Any,
    popularity: np.ndarray,
    *,
    num_resamples: int = 1000,
) -> list[dict[str, Any]]:
    """One record per (run, decoding) present in both: list agreement and, per metric of
    :data:`METRICS`, both values and the paired difference ``mine - theirs`` (same users
    resampled for both).

    Args:
        mine / theirs: ``{run: {decoding: [rows, K] item ids}}`` on the same rows, in the same
            order.
        targets: ``[rows]`` catalog positions of the next items.
        users: each row's user (the bootstrap's clusters).
        trie / popularity: as :class:`~igdbeam.evaluation.bootstrap.RowMetrics`.
    """
    boot = ClusteredBootstrap(users, num_rows=len(targets), num_resamples=num_resamples)
    records = []
    for run, methods in mine.items():
        for method, ranked in methods.items():
            other = theirs.get(run, {}).get(method)
            if other is None:
                continue
            a = RowMetrics(ranked, targets, trie, popularity)
            b = RowMetrics(other, targets, trie, popularity)
            diff = boot.difference(a, b, METRICS)
            va, vb = a.values(), b.values()
            records.append(
                {
                    "run": run,
                    "decoding": method,
                    "rows": len(targets),
                    **list_agreement(ranked, other),
                    "metrics": {
                        m: {"mine": va[m], "theirs": vb[m], "difference": diff[m]} for m in METRICS
                    },
                }
            )
    return records


def agreement_table(records: Sequence[Mapping[str, Any]], mine: str, theirs: str) -> str:
    """A Markdown section of :func:`compare_decodes`'s records; ``mine`` / ``theirs`` name the
    two decodes (e.g. ``float32`` / ``bfloat16``)."""
    if not records:
        return ""
    rows = records[0]["rows"]
    lines = [
        f"### The same fine-tunes decoded in {theirs} ({rows} rows decoded by both)",
        "",
        f"Both decodes use the same decoding settings on the same rows; only the precision "
        f"differs. Difference = {mine} - {theirs}, paired, user-clustered 95% interval.",
        "",
        f"| run | decoding | identical top-10 lists | shared top-10 items | NDCG@10 {mine} | "
        f"NDCG@10 {theirs} | NDCG@10 difference | HR@10 difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        n, h = r["metrics"]["NDCG@10"], r["metrics"]["HR@10"]
        lines.append(
            f"| {r['run']} | {r['decoding']} | {100 * r['identical']:.1f}% | "
            f"{100 * r['overlap']:.1f}% | {n['mine']:.4f} | {n['theirs']:.4f} | "
            f"{format_difference(n['difference'])} | {format_difference(h['difference'])} |"
        )
    return "\n".join(lines) + "\n"
