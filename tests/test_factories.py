"""The shared builders themselves: the synthetic catalog generator keeps its seeded stream and
the shapes it promises, and the tiny model factory builds what its knobs say."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factories.catalogs import synthetic_catalog
from factories.ids import EOS, FIRST_TOKEN
from factories.models import tiny_config, tiny_llama
from igdbeam import ItemTrie


def test_uniform_paths_keep_the_seeded_stream() -> None:
    """The decoding tests' assertions were written against these exact catalogs."""
    assert synthetic_catalog(6, 96, seed=0).paths() == [
        [8, 2], [8, 5, 7, 2], [8, 10, 9, 2], [56, 5, 2], [56, 8, 6, 2], [56, 11, 4, 2],
    ]  # fmt: skip
    wide = synthetic_catalog(5, 512, seed=13, max_len=5, heads=6, alphabet=18)
    assert wide.paths() == [[135, 20, 2], [151, 8, 2], [437, 10, 2], [437, 12, 2], [468, 2]]


@pytest.mark.parametrize(("heads", "alphabet"), [(3, 9), (50, None)])
def test_uniform_paths_shape(heads: int, alphabet: int | None) -> None:
    paths = synthetic_catalog(
        200, 400, seed=4, min_len=2, max_len=6, heads=heads, alphabet=alphabet
    ).paths()
    assert len(paths) == len({tuple(p) for p in paths}) == 200 and paths == sorted(paths)
    assert all(p[-1] == EOS and 3 <= len(p) <= 7 for p in paths)
    assert all(FIRST_TOKEN <= t < 400 for p in paths for t in p[:-1])
    assert len({p[0] for p in paths}) <= heads
    if alphabet is not None:
        assert all(t < FIRST_TOKEN + alphabet for p in paths for t in p[1:-1])


def test_wide_root_and_duplicates() -> None:
    catalog = synthetic_catalog(
        1_200, 2_000, seed=1, max_len=3, heads=1_000, alphabet=None, wide_root=True,
        duplicates=(0, 7),
    )  # fmt: skip
    paths = catalog.paths()
    assert catalog.num_items == len(paths) == 1_202 and paths[-2:] == [paths[0], paths[7]]
    trie = ItemTrie.from_token_ids(paths)
    assert trie.max_fanout == trie.children(0)[0].numel() == 1_000  # every head starts a path
    assert trie.num_leaves == 1_200
    assert trie.items_of_node(int(trie.walk([paths[7]])[0])) == [7, 1_201]


def test_zipf_paths_are_csr_titles() -> None:
    catalog = synthetic_catalog(3_000, 1_000, seed=2, zipf=1.2, min_len=3, max_len=12)
    offsets, tokens = catalog.csr()
    lengths = np.diff(offsets)
    assert offsets[0] == 0 and offsets[-1] == tokens.shape[0] and catalog.num_items == 3_000
    assert lengths.min() >= 4 and lengths.max() <= 13
    assert (tokens[offsets[1:] - 1] == EOS).all()
    body = np.delete(tokens, offsets[1:] - 1)
    assert body.min() >= FIRST_TOKEN and body.max() < 1_000
    # Zipf: the most common token is far more common than a uniform draw would make it.
    assert np.bincount(body).max() > 20 * body.size / (1_000 - FIRST_TOKEN)
    paths = catalog.paths()
    assert [len(p) for p in paths] == lengths.tolist()
    again = synthetic_catalog(3_000, 1_000, seed=2, zipf=1.2, min_len=3, max_len=12, duplicates=[5])
    assert again.paths() == paths + [paths[5]]


def test_catalog_errors() -> None:
    with pytest.raises(ValueError, match="min_len"):
        synthetic_catalog(3, min_len=3, max_len=2)
    with pytest.raises(ValueError, match="wide_root"):
        synthetic_catalog(3, zipf=1.5, wide_root=True)


def test_tiny_model_knobs() -> None:
    model = tiny_llama(64, seed=1, dtype=torch.bfloat16, layers=1, heads=2, kv_heads=1)
    assert model.config.num_hidden_layers == 1 and model.config.num_key_value_heads == 1
    assert model.dtype == torch.bfloat16 and not model.training
    plain = tiny_llama(64, seed=1, layers=1, heads=2, kv_heads=1, sharpen=None)
    torch.testing.assert_close(
        model.lm_head.weight.float(), (8 * plain.lm_head.weight).bfloat16().float()
    )
    mistral = tiny_llama(family="mistral", sliding_window=6)
    assert type(mistral).__name__ == "MistralForCausalLM" and mistral.config.sliding_window == 6
    assert tiny_config(tie_word_embeddings=True).tie_word_embeddings
    with pytest.raises(ValueError, match="family must be one of"):
        tiny_config(family="gpt2")
