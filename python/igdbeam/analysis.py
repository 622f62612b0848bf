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


def prefix_entropy_by_step(
    trie: Any, items: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean entropy ``H(prefix)`` after each decoding step over the paths of ``items``.

    The trie's node entropy (spec Eq. 5) of the prefix of length ``d + 1`` is averaged over the
    given items whose path is that long; items ``< 0`` (no recommendation) are skipped.

    Returns:
        ``(mean_entropy [max_depth], count [max_depth])``; the mean is NaN where count is 0.
    """
    ent = trie.array("entropy").cpu().numpy().astype(np.float64)
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
) -> dict[str, list[float]]:
    """Entropy-by-step curves for the ground truth and each method's top-``top`` predictions."""
    curves = {"ground truth": prefix_entropy_by_step(trie, ground_truth)[0].tolist()}
    for name, ranked in predictions.items():
        arr = np.asarray(ranked, dtype=np.int64)
        curves[name] = prefix_entropy_by_step(trie, arr[:, :top])[0].tolist()
    return curves


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_entropy_curves(
    curves: Mapping[str, Sequence[float]], path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Save a line plot of prefix entropy by decoding step (one line per curve) as PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name, ys in curves.items():
        xs = np.arange(1, len(ys) + 1)
        style = {"color": "black", "linestyle": "--"} if name == "ground truth" else {}
        ax.plot(xs, ys, marker="o", markersize=3, label=name, **style)
    ax.set_xlabel("decoding step (prefix length in tokens)")
    ax.set_ylabel("prefix entropy H (nats)")
    ax.set_title(title or "Entropy of predicted vs ground-truth prefixes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


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
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
