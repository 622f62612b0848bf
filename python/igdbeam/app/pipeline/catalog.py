"""The catalog side of the pipeline: the MovieLens folder, popularity and the item trie.

Trie item ids are catalog positions in both trie scopes (every catalog item, or only the
training targets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from igdbeam.data.bigrec_csv import Dataset, target_positions
from igdbeam.native.checks import check_non_negative
from igdbeam.training.prompts import trie_for_catalog


def prepare_movielens(
    name: str = "ml-100k",
    out_dir: str | Path | None = None,
    *,
    max_history: int = 10,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Return a folder with the BIGRec-format splits of MovieLens, building it on first use.

    The default folder is ``<cache>/data/<name>-h<max_history>-v2``; the RecBole files come from the
    pinned wheels (:func:`igdbeam.app.assets.asset_path`).
    """
    from igdbeam.app.assets import asset_path, cache_dir
    from igdbeam.data.movielens import build_movielens

    default = cache_dir() / "data" / f"{name}-h{max_history}-v2"
    out = Path(out_dir) if out_dir is not None else default
    if (out / "test.csv").is_file() and not overwrite:
        return out
    build_movielens(
        asset_path(name),
        out,
        name=name,
        max_history=max_history,
        overwrite=True,
        progress=progress,
    )
    return out


def popularity(dataset: Dataset) -> np.ndarray:
    """How often each catalog item is a target in the training split (the paper's ``w_i``).

    Uses the loaded training split, or reads only the ``item_id`` column of ``train.csv``.
    """
    from igdbeam.data.bigrec_csv import read_target_ids
    from igdbeam.trie.popularity import popularity_weights

    if "train" in dataset.splits or dataset.directory is None:
        positions = target_positions(dataset, dataset.split("train"))
    else:
        ids = read_target_ids(dataset.directory / "train.csv")
        positions = np.asarray([dataset.catalog.position(i) for i in ids], dtype=np.int64)
    return popularity_weights(positions, len(dataset.catalog))


CATALOG_SCOPES = ("all", "train-targets")


def item_weights(
    dataset: Dataset,
    weighting: str = "popularity",
    *,
    catalog: str = "all",
    smoothing: float | None = None,
) -> np.ndarray | None:
    """Item weights ``w_i`` of the trie's entropy (spec section 1), one per catalog item.

    ``popularity``: how often the item is a training target, plus ``smoothing``. The default
    smoothing (None) is 1 for the whole catalog (so that never-seen items keep a weight: with
    weight 0 their edges would carry the largest IG and IGD decoding would favour them) and 0
    for ``catalog="train-targets"``, the paper's raw counts. ``uniform`` returns None.
    """
    if weighting not in ("popularity", "uniform"):
        raise ValueError(f"weighting must be 'popularity' or 'uniform', got {weighting!r}")
    if catalog not in CATALOG_SCOPES:
        raise ValueError(f"catalog must be one of {', '.join(CATALOG_SCOPES)}, got {catalog!r}")
    if weighting == "uniform":
        return None
    if smoothing is None:
        smoothing = 1.0 if catalog == "all" else 0.0
    return popularity(dataset) + check_non_negative("smoothing", smoothing)


def catalog_items(dataset: Dataset, catalog: str = "all") -> np.ndarray:
    """Catalog positions of the items a trie of this scope holds (sorted).

    ``all``: every catalog item; ``train-targets``: the items that are the target of at least
    one training row (the public reference code's scope: nothing else can be recommended).
    """
    if catalog not in CATALOG_SCOPES:
        raise ValueError(f"catalog must be one of {', '.join(CATALOG_SCOPES)}, got {catalog!r}")
    if catalog == "all":
        return np.arange(len(dataset.catalog), dtype=np.int64)
    kept = np.nonzero(popularity(dataset) > 0)[0].astype(np.int64)
    if kept.size == 0:
        raise ValueError("catalog='train-targets' needs at least one training row")
    return kept


def with_catalog_ids(trie: Any, item_ids: np.ndarray, num_items: int) -> Any:
    """The same trie with its items renamed: trie item ``k`` becomes catalog item ``item_ids[k]``.

    Catalog items not in ``item_ids`` get ``item_leaf == -1``: they have no path, so decoding
    never returns them and a test row whose target is one of them is a miss.
    """
    from igdbeam.trie.item_trie import ItemTrie

    ids = np.asarray(item_ids, dtype=np.int64)
    if ids.shape != (trie.num_items,) or (ids.size and (ids.min() < 0 or ids.max() >= num_items)):
        raise ValueError(f"item_ids must hold {trie.num_items} catalog ids in [0, {num_items})")
    arrays = trie.arrays()
    leaf_items = arrays["leaf_items"].cpu().numpy().astype(np.int64)
    arrays["leaf_items"] = torch.from_numpy(ids[leaf_items].astype(np.int32))
    item_leaf = np.full(num_items, -1, dtype=np.int32)
    item_leaf[ids] = arrays["item_leaf"].cpu().numpy()
    arrays["item_leaf"] = torch.from_numpy(item_leaf)
    meta = trie.meta  # a copy
    meta["num_items"] = int(num_items)
    return ItemTrie(arrays, meta)


def build_trie(
    dataset: Dataset,
    tokenizer: Any,
    template: str = "igd",
    *,
    weighting: str = "popularity",
    entropy: str = "global",
    catalog: str = "all",
    smoothing: float | None = None,
) -> Any:
    """Build the item trie of a dataset; trie item ids are catalog positions in both scopes.

    Args:
        dataset: the loaded dataset (its training split, or ``train.csv``, gives popularity).
        tokenizer / template: how titles are tokenized (in the template's context).
        weighting: ``popularity`` (training-target counts + ``smoothing``) or ``uniform``.
        entropy: ``global`` (reference default) or ``conditional``.
        catalog: ``all`` (every catalog item can be recommended) or ``train-targets`` (the
            reference code's trie: only items seen as a training target).
        smoothing: added to every popularity count; None: 1 for ``all``, 0 (raw counts, the
            paper's setting) for ``train-targets`` (see :func:`item_weights`).
    """
    weights = item_weights(dataset, weighting, catalog=catalog, smoothing=smoothing)
    keep = catalog_items(dataset, catalog)
    titles = dataset.catalog.titles
    if catalog == "all":
        return trie_for_catalog(titles, tokenizer, template, weights=weights, entropy=entropy)
    trie = trie_for_catalog(
        [titles[int(i)] for i in keep],
        tokenizer,
        template,
        weights=None if weights is None else weights[keep],
        entropy=entropy,
    )
    return with_catalog_ids(trie, keep, len(dataset.catalog))
