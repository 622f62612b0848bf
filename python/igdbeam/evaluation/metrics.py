"""Ranking accuracy and diversity of top-K recommendation lists (spec section 6).

Every function takes ranked catalog item ids (``[users, K]``, best first, ``-1`` for an empty
slot, as :func:`igdbeam.generate` returns them) and, for accuracy, one ground-truth item per user.
Items are matched through their trie leaf, so two catalog items with the same title (one leaf)
count as the same recommendation, as in the reference code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

DEFAULT_KS = (1, 3, 5, 10, 20)

ArrayLike = np.ndarray | torch.Tensor | Sequence[Sequence[int]]


def _as_2d(ranked: ArrayLike) -> np.ndarray:
    if isinstance(ranked, torch.Tensor):
        arr = ranked.detach().cpu().numpy()
    elif isinstance(ranked, np.ndarray):
        arr = ranked
    else:
        rows = [list(r) for r in ranked]
        width = max((len(r) for r in rows), default=0)
        arr = np.full((len(rows), width), -1, dtype=np.int64)
        for i, r in enumerate(rows):
            arr[i, : len(r)] = r
    arr = np.asarray(arr, dtype=np.int64)
    if arr.ndim != 2:
        raise ValueError(f"ranked item ids must be [users, K], got shape {tuple(arr.shape)}")
    return arr


def _as_1d(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.int64).reshape(-1)
    return arr


def _leaf_of(trie: Any, items: np.ndarray) -> np.ndarray:
    """Map item ids to leaf node ids (``-1`` stays ``-1``)."""
    item_leaf = trie.array("item_leaf").cpu().numpy().astype(np.int64)
    out = np.full(items.shape, -1, dtype=np.int64)
    ok = (items >= 0) & (items < item_leaf.shape[0])
    out[ok] = item_leaf[items[ok]]
    return out


def hit_ranks(ranked: ArrayLike, targets: Any, trie: Any = None) -> np.ndarray:
    """Return the 0-based rank of each user's first hit, or -1 when the target is not listed.

    With ``trie``, a recommendation hits when it reaches the target's leaf (duplicate titles
    share a leaf); without it, item ids are compared directly.
    """
    r = _as_2d(ranked)
    t = _as_1d(targets, "targets")
    if t.shape[0] != r.shape[0]:
        raise ValueError(f"{r.shape[0]} ranked lists but {t.shape[0]} targets")
    if trie is not None:
        r, t = _leaf_of(trie, r), _leaf_of(trie, t)
    hits = (r == t[:, None]) & (r >= 0)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), -1)
    return first.astype(np.int64)


def ranking_metrics(
    ranked: ArrayLike,
    targets: Any,
    *,
    trie: Any = None,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Mean NDCG@K and HR@K over users.

    NDCG@K = ``1 / log2(rank + 2)`` for a hit at 0-based ``rank < K``, else 0 (one relevant item,
    so the ideal DCG is 1); HR@K = 1 for a hit in the top K. A ``K`` larger than the list length
    simply uses the whole list.

    Returns:
        ``{"NDCG@1": ..., "HR@1": ..., ...}`` in the order of ``ks``; 0.0 for zero users.
    """
    ranks = hit_ranks(ranked, targets, trie)
    out: dict[str, float] = {}
    n = max(ranks.shape[0], 1)
    for k in ks:
        if k <= 0:
            raise ValueError(f"K must be positive, got {k}")
        hit = (ranks >= 0) & (ranks < k)
        gain = np.where(hit, 1.0 / np.log2(ranks.clip(min=0) + 2.0), 0.0)
        out[f"NDCG@{k}"] = float(gain.sum() / n)
        out[f"HR@{k}"] = float(hit.sum() / n)
    return out


def first_tokens(trie: Any) -> np.ndarray:
    """Return the first token of every catalog item's path (int64, indexed by item id).

    Items outside the trie (``item_leaf == -1``, a ``train-targets`` catalog) get -1.
    """
    parent = trie.array("parent").cpu().numpy().astype(np.int64)
    depth = trie.array("depth").cpu().numpy().astype(np.int64)
    token = trie.array("token").cpu().numpy().astype(np.int64)
    node = trie.array("item_leaf").cpu().numpy().astype(np.int64).copy()
    present = node > 0
    for _ in range(trie.max_depth):
        deep = present & (depth[node] > 1)
        if not deep.any():
            break
        node[deep] = parent[node[deep]]
    return np.where(present, token[node], -1)


def diversity_metrics(
    ranked: ArrayLike,
    *,
    num_items: int,
    k: int | None = None,
    first_token: np.ndarray | None = None,
    popularity: np.ndarray | Sequence[float] | None = None,
    tail_fraction: float = 0.8,
) -> dict[str, float]:
    """Diversity of the top-``k`` lists (all of each list when ``k`` is None).

    * ``coverage``: distinct recommended items / ``num_items``;
    * ``same_first_token_share``: share of lists (with at least two items) whose items all start
      with the same first token, the symptom of the token-level bias IGD targets;
    * ``mean_top_first_token_share``: per list, the share of items that start with the list's
      most common first token, averaged over lists;
    * ``mean_popularity``: mean ``popularity[item]`` (e.g. training target counts) over all
      recommended items; ``tail_share``: share of recommended items outside the most popular
      ``1 - tail_fraction`` of the catalog (the long tail is the ``tail_fraction`` least popular).

    Empty slots (``-1``) are ignored.
    """
    r = _as_2d(ranked)
    if k is not None:
        r = r[:, :k]
    if num_items <= 0:
        raise ValueError(f"num_items must be positive, got {num_items}")
    valid = r >= 0
    if (r >= num_items).any():
        raise ValueError(f"an item id is >= num_items ({num_items})")
    rec = r[valid]
    out: dict[str, float] = {
        "coverage": float(np.unique(rec).shape[0] / num_items),
        "mean_list_length": float(valid.sum(axis=1).mean()) if r.shape[0] else 0.0,
    }
    if first_token is not None:
        ft = np.asarray(first_token, dtype=np.int64)
        same = []
        top_share = []
        for row, ok in zip(r, valid, strict=True):
            toks = ft[row[ok]]
            if toks.shape[0] == 0:
                continue
            _, counts = np.unique(toks, return_counts=True)
            top_share.append(counts.max() / toks.shape[0])
            if toks.shape[0] >= 2:
                same.append(float(counts.shape[0] == 1))
        out["same_first_token_share"] = float(np.mean(same)) if same else 0.0
        out["mean_top_first_token_share"] = float(np.mean(top_share)) if top_share else 0.0
    if popularity is not None:
        pop = np.asarray(popularity, dtype=np.float64)
        if pop.shape[0] != num_items:
            raise ValueError(f"popularity has {pop.shape[0]} entries for {num_items} items")
        out["mean_popularity"] = float(pop[rec].mean()) if rec.size else 0.0
        order = np.argsort(-pop, kind="stable")
        head = np.zeros(num_items, dtype=bool)
        head[order[: int(round(num_items * (1.0 - tail_fraction)))]] = True
        out["tail_share"] = float((~head[rec]).mean()) if rec.size else 0.0
    return out


def evaluate_recommendations(
    ranked: ArrayLike,
    targets: Any,
    trie: Any,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    popularity: np.ndarray | Sequence[float] | None = None,
    diversity_k: int | None = 10,
) -> dict[str, float]:
    """Accuracy (:func:`ranking_metrics` through the trie) and :func:`diversity_metrics` at once."""
    out = ranking_metrics(ranked, targets, trie=trie, ks=ks)
    out.update(
        diversity_metrics(
            ranked,
            num_items=trie.num_items,
            k=diversity_k,
            first_token=first_tokens(trie),
            popularity=popularity,
        )
    )
    out["num_users"] = float(_as_2d(ranked).shape[0])
    return out
