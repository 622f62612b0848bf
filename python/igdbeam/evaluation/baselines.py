"""Non-LLM reference recommenders scored on the same test rows as the LLM: most-popular lists.

A recommender team's first question about an LLM recommender is whether it beats counting.
``most-popular`` recommends the ``k`` items that are most often a target in the training split
(ties broken by the smaller item id) to every row; ``most-popular-unseen`` does the same but
skips the items of the row's own history (MovieLens users never rate a movie twice, so an item
of the history can never be the next one). Both are restricted to the candidate items the LLM
can produce (the trie's catalog, :func:`trie_items`), so every method ranks the same candidates.

Item ids are catalog positions (the trie's item ids); ``-1`` fills a slot when fewer than ``k``
candidates remain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MOST_POPULAR = "most-popular"
MOST_POPULAR_UNSEEN = "most-popular-unseen"
SASREC = "sasrec"
# How each baseline is named in the tables.
BASELINE_LABELS: Mapping[str, str] = {
    MOST_POPULAR: "most-popular",
    MOST_POPULAR_UNSEEN: "most-popular, history excluded",
    SASREC: "SASRec (RecTools)",
}


def trie_items(trie: Any) -> np.ndarray:
    """Catalog positions of the items the trie can produce (sorted; ``item_leaf >= 0``)."""
    item_leaf = trie.array("item_leaf").cpu().numpy()
    return np.nonzero(item_leaf >= 0)[0].astype(np.int64)


def popularity_order(
    popularity: np.ndarray | Sequence[float], candidates: np.ndarray | Sequence[int] | None = None
) -> np.ndarray:
    """Candidate items by decreasing training-target count, ties by increasing item id.

    Args:
        popularity: ``[num_items]`` training-target counts (indexed by catalog position).
        candidates: the items that may be recommended (None: every catalog item).
    """
    pop = np.asarray(popularity, dtype=np.float64)
    if pop.ndim != 1:
        raise ValueError(f"popularity must be one count per item, got shape {pop.shape}")
    items = (
        np.arange(pop.shape[0], dtype=np.int64)
        if candidates is None
        else np.unique(np.asarray(candidates, dtype=np.int64))
    )
    if items.size and (items.min() < 0 or items.max() >= pop.shape[0]):
        raise ValueError(f"a candidate item id is outside 0..{pop.shape[0] - 1}")
    # lexsort sorts by the last key first: count descending, then id ascending.
    return items[np.lexsort((items, -pop[items]))]


def most_popular(
    popularity: np.ndarray | Sequence[float],
    num_rows: int,
    *,
    k: int = 10,
    exclude: Sequence[Sequence[int]] | None = None,
    candidates: np.ndarray | Sequence[int] | None = None,
) -> np.ndarray:
    """``[num_rows, k]`` most-popular lists, optionally skipping each row's own items.

    Args:
        popularity: ``[num_items]`` training-target counts.
        num_rows: how many rows (test rows) to recommend for.
        k: list length.
        exclude: per row, the items never to recommend to it (e.g. its history); None: the same
            list for every row.
        candidates: the items that may be recommended (None: every catalog item).
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if exclude is not None and len(exclude) != num_rows:
        raise ValueError(f"exclude has {len(exclude)} rows for {num_rows} rows")
    order = popularity_order(popularity, candidates)
    out = np.full((num_rows, k), -1, dtype=np.int64)
    top = order[:k]
    if exclude is None:
        out[:, : top.size] = top
        return out
    for r, seen in enumerate(exclude):
        skip = {int(i) for i in seen}
        head = order[: k + len(skip)]  # enough: at most len(skip) of them are skipped
        kept = [int(i) for i in head if int(i) not in skip][:k]
        out[r, : len(kept)] = kept
    return out


def popularity_baselines(
    popularity: np.ndarray | Sequence[float],
    histories: Sequence[Sequence[int]],
    *,
    k: int = 10,
    candidates: np.ndarray | Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """Both popularity baselines on the rows whose histories are given.

    Returns:
        ``{"most-popular": [rows, k], "most-popular-unseen": [rows, k]}`` (catalog positions).
    """
    n = len(histories)
    return {
        MOST_POPULAR: most_popular(popularity, n, k=k, candidates=candidates),
        MOST_POPULAR_UNSEEN: most_popular(
            popularity, n, k=k, exclude=histories, candidates=candidates
        ),
    }
