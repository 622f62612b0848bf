"""Analyses from the IGD paper: zero-IG token share (Table 4) and prefix entropy by step (Fig. 1-3).

Plots are written as PNG with matplotlib's non-interactive Agg backend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def item_path_nodes(trie: Any) -> np.ndarray:
    """Return ``[num_items, max_depth]`` int64: the node at each step of each item's path, -1 after.

    Column ``d`` holds the node reached after ``d + 1`` tokens (the prefix of length ``d + 1``).
    """
    parent = trie.array("parent").cpu().numpy().astype(np.int64)
    depth = trie.array("depth").cpu().numpy().astype(np.int64)
    node = trie.array("item_leaf").cpu().numpy().astype(np.int64).copy()
    out = np.full((node.shape[0], trie.max_depth), -1, dtype=np.int64)
    rows = np.arange(node.shape[0])
    for _ in range(trie.max_depth):
        live = node > 0
        if not live.any():
            break
        out[rows[live], depth[node[live]] - 1] = node[live]
        node[live] = parent[node[live]]
    return out


def zero_ig_report(trie: Any) -> dict[str, Any]:
    """The paper's Table 4 numbers plus the zero-IG share by decoding step.

    Returns ``trie.stats()`` (``zero_ig_token_share`` weighs items by their weight, i.e.
    popularity when the trie was built with it) and ``zero_ig_share_by_step``: for each step
    ``d``, the share of items with a path of length > ``d`` whose token at step ``d`` has zero IG.
    """
    stats = dict(trie.stats())
    zero = trie.array("zero_ig").cpu().numpy().astype(bool)
    nodes = item_path_nodes(trie)
    by_step = []
    for d in range(nodes.shape[1]):
        col = nodes[:, d]
        col = col[col >= 0]
        by_step.append(float(zero[col].mean()) if col.size else float("nan"))
    stats["zero_ig_share_by_step"] = by_step
    return stats


def node_mass(trie: Any) -> np.ndarray:
    """Return ``P(n) = sum_{i in S(n)} p_r(i)`` for every node (1 at the root)."""
    parent = trie.array("parent").cpu().numpy().astype(np.int64)
    depth = trie.array("depth").cpu().numpy().astype(np.int64)
    mass = np.zeros(parent.shape[0], dtype=np.float64)
    leaves = trie.array("leaf_nodes").cpu().numpy().astype(np.int64)
    mass[leaves] = trie.array("leaf_weight").cpu().numpy().astype(np.float64)
    for d in range(int(depth.max()), 0, -1):
        idx = np.nonzero(depth == d)[0]
        np.add.at(mass, parent[idx], mass[idx])
    return mass / mass[0]


def node_entropy(trie: Any, mode: str = "conditional") -> np.ndarray:
    """Entropy of every trie node (nats).

    ``"global"``: the trie's own partial entropy (spec Eq. 5, ``p_r`` over the whole catalog);
    ``"conditional"``: the entropy of the items under the prefix, renormalised inside ``S(n)``,
    i.e. the uncertainty left about the item once the prefix is decoded:
    ``H_cond(n) = H(n) / P(n) + ln P(n)`` (computed from the global ``H`` of a trie built in
    global mode; a conditional-mode trie already stores it).
    """
    ent = trie.array("entropy").cpu().numpy().astype(np.float64)
    if mode not in ("global", "conditional"):
        raise ValueError(f"mode must be 'global' or 'conditional', got {mode!r}")
    if mode == "global" or trie.entropy_mode == "conditional":
        if mode == "global" and trie.entropy_mode == "conditional":
            raise ValueError("this trie stores conditional entropy; build it in global mode")
        return ent
    mass = node_mass(trie)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(mass > 0, ent / mass + np.log(np.where(mass > 0, mass, 1.0)), 0.0)
    return np.maximum(out, 0.0)


def prefix_entropy_by_step(
    trie: Any, items: Sequence[int] | np.ndarray, *, mode: str = "conditional"
) -> tuple[np.ndarray, np.ndarray]:
    """Mean prefix entropy after each decoding step over the paths of ``items``.

    The entropy (:func:`node_entropy`, ``mode`` ``"conditional"`` or ``"global"``) of the prefix
    of length ``d + 1`` is averaged over the given items whose path is that long; items ``< 0``
    (no recommendation) are skipped.

    Returns:
        ``(mean_entropy [max_depth], count [max_depth])``; the mean is NaN where count is 0.
    """
    ent = node_entropy(trie, mode)
    nodes = item_path_nodes(trie)
    ids = np.asarray(items, dtype=np.int64).reshape(-1)
    ids = ids[ids >= 0]
    sel = nodes[ids]
    ok = sel >= 0
    count = ok.sum(axis=0)
    total = np.where(ok, ent[sel.clip(min=0)], 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return mean, count


def entropy_curves(
    trie: Any,
    ground_truth: Sequence[int] | np.ndarray,
    predictions: Mapping[str, np.ndarray],
    *,
    top: int = 1,
    mode: str = "conditional",
) -> dict[str, list[float]]:
    """Entropy-by-step curves for the ground truth and each method's top-``top`` predictions."""
    curves = {"ground truth": prefix_entropy_by_step(trie, ground_truth, mode=mode)[0].tolist()}
    for name, ranked in predictions.items():
        arr = np.asarray(ranked, dtype=np.int64)
        curves[name] = prefix_entropy_by_step(trie, arr[:, :top], mode=mode)[0].tolist()
    return curves


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt: Any, fig: Any, path: str | os.PathLike[str]) -> Path:
    """Lay out ``fig``, save it to ``path`` (creating its folder), close it; return the path."""
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_entropy_curves(
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    ylabel: str = "entropy left after the prefix (nats)",
) -> Path:
    """Save a line plot of prefix entropy by decoding step (one line per curve) as PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name, ys in curves.items():
        xs = np.arange(1, len(ys) + 1)
        style = {"color": "black", "linestyle": "--"} if name == "ground truth" else {}
        ax.plot(xs, ys, marker="o", markersize=3, label=name, **style)
    ax.set_xlabel("decoding step (prefix length in tokens)")
    ax.set_ylabel(ylabel)
    ax.set_title(title or "Entropy of predicted vs ground-truth prefixes")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save_figure(plt, fig, path)


def plot_zero_ig_by_step(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Save a bar chart of the zero-IG share at each decoding step (from :func:`zero_ig_report`)."""
    plt = _pyplot()
    shares = report["zero_ig_share_by_step"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.bar(np.arange(1, len(shares) + 1), shares, color="tab:orange")
    ax.set_xlabel("decoding step")
    ax.set_ylabel("share of items whose token has zero IG")
    ax.set_ylim(0, 1)
    ax.set_title(f"Zero-IG tokens: {100 * report['zero_ig_token_share']:.1f}% of all item tokens")
    ax.grid(alpha=0.3, axis="y")
    return _save_figure(plt, fig, path)


def plot_cell_intervals(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    metrics: Sequence[str] = ("NDCG@10", "HR@10"),
    title: str = "",
) -> Path:
    """Save each cell's value with its 95% interval (one panel per metric) as PNG.

    ``records`` are :func:`igdbeam.evaluation.report.summarize` records (``label``, ``kind``,
    ``metrics[m] = {value, low, high}``); baselines are drawn in grey. ``title`` should say n
    (rows, users) and the interval method.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(5.2 * len(metrics), 0.5 * len(records) + 1.6)
    )
    axes = np.atleast_1d(axes)
    ys = np.arange(len(records))[::-1]
    for ax, metric in zip(axes, metrics, strict=True):
        for y, r in zip(ys, records, strict=True):
            m = r["metrics"][metric]
            color = "tab:gray" if r.get("kind") == "baseline" else "tab:blue"
            err = [[m["value"] - m["low"]], [m["high"] - m["value"]]]
            ax.errorbar(m["value"], y, xerr=err, fmt="o", color=color, capsize=3)
        ax.set_yticks(ys)
        ax.set_yticklabels([str(r["label"]) for r in records] if ax is axes[0] else [])
        ax.set_xlabel(f"{metric} (95% interval)")
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(title or "Cells with 95% intervals")
    fig.tight_layout()
    return _save_figure(plt, fig, path)
