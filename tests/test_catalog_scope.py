"""Catalog scope (all items vs training targets) and popularity smoothing of the pipeline's trie."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from factories.data import write_tiny_data
from factories.models import tiny_llama, tiny_tokenizer
from igdbeam import ItemTrie
from igdbeam.app.pipeline import (
    build_trie,
    catalog_items,
    item_weights,
    popularity,
    with_catalog_ids,
)
from igdbeam.data import load_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    return load_dataset(write_tiny_data(tmp_path_factory.mktemp("scope") / "data"))


def test_train_target_scope_keeps_catalog_ids(dataset) -> None:
    tok = tiny_tokenizer()
    counts = popularity(dataset)
    kept = np.nonzero(counts > 0)[0]
    assert 0 < kept.size < len(dataset.catalog)  # the tiny data leaves some items unseen
    full = build_trie(dataset, tok, catalog="all")
    scoped = build_trie(dataset, tok, catalog="train-targets")
    assert scoped.num_items == full.num_items == len(dataset.catalog)
    assert scoped.num_leaves == kept.size
    item_leaf = scoped.array("item_leaf").numpy()
    assert set(np.nonzero(item_leaf >= 0)[0]) == set(kept)
    # Each kept item keeps its token path (catalog position = trie item id in both scopes).
    for i in kept:
        assert scoped.item_path(int(i)) == full.item_path(int(i))
    # Raw counts (the paper's weights): the root entropy is the entropy of the counts.
    p = counts[kept] / counts[kept].sum()
    assert float(scoped.entropy[0]) == pytest.approx(-(p * np.log(p)).sum(), rel=1e-6)
    # The whole-catalog trie smooths by 1 by default.
    q = (counts + 1.0) / (counts + 1.0).sum()
    assert float(full.entropy[0]) == pytest.approx(-(q * np.log(q)).sum(), rel=1e-6)


def test_scoped_trie_round_trips_through_a_file(dataset, tmp_path: Path) -> None:
    scoped = build_trie(dataset, tiny_tokenizer(), catalog="train-targets")
    path = tmp_path / "scoped.igdtrie"
    scoped.save(str(path))
    back = ItemTrie.load(str(path))
    for name in ("item_leaf", "leaf_items", "info_gain", "zero_ig"):
        np.testing.assert_array_equal(back.array(name).numpy(), scoped.array(name).numpy())


def test_scoped_decoding_never_returns_unseen_items(dataset) -> None:
    import torch

    import igdbeam

    tok = tiny_tokenizer()
    trie = build_trie(dataset, tok, catalog="train-targets")
    model = tiny_llama(
        len(tok),
        layers=1,
        sharpen=None,
        hidden=16,
        intermediate=32,
        heads=2,
        kv_heads=2,
        max_positions=2048,
        eos=tok.eos_token_id,
        pad=tok.pad_token_id,
    )
    ids = torch.tensor([[5, 6, 7, 8]])
    out = igdbeam.generate(model, ids, torch.ones_like(ids), trie=trie, num_beams=20, alpha=0.2)
    got = [i for i in out.item_ids[0].tolist() if i >= 0]
    kept = set(catalog_items(dataset, "train-targets").tolist())
    assert len(got) == len(kept) and set(got) == kept  # every kept item, nothing else


def test_smoothing_options(dataset) -> None:
    counts = popularity(dataset)
    np.testing.assert_array_equal(item_weights(dataset, catalog="all"), counts + 1)
    np.testing.assert_array_equal(item_weights(dataset, catalog="train-targets"), counts)
    np.testing.assert_array_equal(item_weights(dataset, smoothing=0.5), counts + 0.5)
    assert item_weights(dataset, "uniform") is None
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="smoothing"):
            item_weights(dataset, smoothing=bad)
    with pytest.raises(ValueError, match="catalog"):
        catalog_items(dataset, "some")


def test_with_catalog_ids_checks_its_ids() -> None:
    trie = ItemTrie.from_token_ids([[3, 2], [4, 2]])
    with pytest.raises(ValueError, match="catalog ids"):
        with_catalog_ids(trie, np.array([0, 9]), 5)
    with pytest.raises(ValueError, match="catalog ids"):
        with_catalog_ids(trie, np.array([0]), 5)
