"""igdbeam.generate against the processor path in model.generate and against brute force."""

from __future__ import annotations

import sys

import pytest
import torch
from transformers import LlamaForCausalLM

import igdbeam
from factories.catalogs import synthetic_catalog
from factories.ids import EOS, PAD
from factories.models import left_pad, tiny_llama
from generate_checks import assert_same_hypotheses, ours_hypotheses, processor_path
from igdbeam.decoding.generate import cache_field_name, custom_generate, generate
from oracles.decode import brute_force_scores
from oracles.trie import ReferenceTrie


@pytest.fixture(autouse=True, params=["shared_prefix", "dynamic"])
def kv_cache(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test with both KV caches: ``kv_cache="auto"`` resolves to the parameter."""
    module = sys.modules["igdbeam.decoding.generate"]
    resolve = module.resolve_kv_cache

    def forced(model, mode: str, length: int) -> str:
        return resolve(model, request.param if mode == "auto" else mode, length)

    monkeypatch.setattr(module, "resolve_kv_cache", forced)
    return request.param


CATALOGS = {
    "random": lambda: synthetic_catalog(18, 96, seed=21).paths(),
    "prefix": lambda: [[5, EOS], [5, 6, EOS], [5, 6, 7, EOS], [8, 9, EOS], [8, 10, 11, EOS]],
    "single_child": lambda: [[12, 13, 14, 15, EOS], [16, EOS], [16, 17, EOS], [18, 19, EOS]],
    "tiny": lambda: [[20, 21, EOS], [22, EOS]],
}


@pytest.mark.parametrize("kind", sorted(CATALOGS))
@pytest.mark.parametrize("lp", [0.0, 1.0])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5])
def test_generate_matchesprocessor_path(kind: str, lp: float, alpha: float) -> None:
    model = tiny_llama(seed=4)
    paths = CATALOGS[kind]()
    weights = [1 + (i * 5) % 4 for i in range(len(paths))]
    trie = igdbeam.ItemTrie.from_token_ids(paths, weights)
    ref = ReferenceTrie(paths, weights)
    ids, mask = left_pad([[5, 6, 7], [30, 31, 32, 33, 34], [40]])
    theirs = processor_path(model, ids, mask, trie, ref, 4, alpha, lp)
    result = generate(model, ids, mask, trie=trie, num_beams=4, alpha=alpha, length_penalty=lp)
    ours = ours_hypotheses(result, trie)
    assert_same_hypotheses(ours, theirs)
    assert result.item_ids.shape == (3, 4) and result.scores.shape == (3, 4)
    assert all(len(r) == min(4, len(paths)) for r in ours)


@pytest.mark.parametrize("lp", [0.0, 1.0])
def test_generate_early_stopping_never_matchesprocessor_path(lp: float) -> None:
    model = tiny_llama(seed=5)
    paths = synthetic_catalog(25, 96, seed=22, max_len=5).paths()
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    ref = ReferenceTrie(paths)
    ids, mask = left_pad([[5, 6], [7, 8, 9, 10]])
    theirs = processor_path(model, ids, mask, trie, ref, 3, 0.2, lp, early_stopping="never")
    result = generate(
        model,
        ids,
        mask,
        trie=trie,
        num_beams=3,
        alpha=0.2,
        length_penalty=lp,
        early_stopping="never",
    )
    assert_same_hypotheses(ours_hypotheses(result, trie), theirs)


@pytest.mark.parametrize("lp", [0.0, 1.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
@pytest.mark.parametrize("renormalize", [False, True])
def test_large_beam_finds_every_item_in_exact_order(
    lp: float, alpha: float, renormalize: bool
) -> None:
    """With K >= #items every item comes back, ranked by its brute-force path score."""
    model = tiny_llama(seed=6)
    paths = synthetic_catalog(9, 96, seed=23).paths() + [[5, EOS], [5, 6, EOS]]
    weights = [1 + i % 3 for i in range(len(paths))]
    trie = igdbeam.ItemTrie.from_token_ids(paths, weights)
    ref = ReferenceTrie(paths, weights)
    prompts = [[5, 6, 7], [30, 31, 32, 33, 34]]
    ids, mask = left_pad(prompts)
    result = generate(
        model,
        ids,
        mask,
        trie=trie,
        num_beams=len(paths) + 2,
        alpha=alpha,
        length_penalty=lp,
        renormalize=renormalize,
    )
    ours = ours_hypotheses(result, trie)
    for b, prompt in enumerate(prompts):
        exact = brute_force_scores(model, prompt, ref, alpha, lp, renormalize)
        expected = sorted(exact.items(), key=lambda kv: -kv[1])
        assert [p for p, _ in ours[b]] == [p for p, _ in expected]
        for (_, so), (_, se) in zip(ours[b], expected, strict=True):
            assert so == pytest.approx(se, abs=1e-4)
        assert (result.item_ids[b, len(paths) :] == -1).all()


def test_k_larger_than_catalog() -> None:
    model = tiny_llama(seed=7)
    paths = [[20, 21, EOS], [22, EOS], [20, 23, EOS]]
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    ids, mask = left_pad([[5, 6, 7]])
    result = generate(model, ids, mask, trie=trie, num_beams=8, num_return_sequences=6)
    assert result.item_ids.shape == (1, 6)
    assert sorted(result.item_ids[0, :3].tolist()) == [0, 1, 2]
    assert result.item_ids[0, 3:].tolist() == [-1, -1, -1]
    assert torch.isinf(result.scores[0, 3:]).all() and torch.isfinite(result.scores[0, :3]).all()
    assert (result.scores[0, :2] >= result.scores[0, 1:3]).all()


def test_duplicate_titles_share_a_leaf() -> None:
    model = tiny_llama(seed=7)
    paths = [[20, 21, EOS], [22, EOS], [20, 21, EOS]]  # items 0 and 2 are the same path
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    result = generate(model, torch.tensor([[5, 6]]), trie=trie, num_beams=4)
    assert sorted(result.item_ids[0, :2].tolist()) == [0, 1]
    assert result.item_ids[0, 2:].tolist() == [-1, -1]


def test_bf16_model_matchesprocessor_path(kv_cache: str) -> None:
    model = tiny_llama(seed=8, dtype=torch.bfloat16)
    paths = synthetic_catalog(16, 96, seed=24).paths()
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    ref = ReferenceTrie(paths)
    ids, mask = left_pad([[5, 6, 7], [9, 10]])
    theirs = processor_path(model, ids, mask, trie, ref, 4, 0.2, 0.0)
    result = generate(model, ids, mask, trie=trie, num_beams=4, alpha=0.2)
    # The shared-prefix cache computes attention in float32, SDPA in bf16: bf16-level agreement.
    atol = 1e-5 if kv_cache == "dynamic" else 2e-2
    assert_same_hypotheses(ours_hypotheses(result, trie), theirs, atol=atol)


def test_custom_generate_form() -> None:
    model = tiny_llama(seed=9)
    paths = synthetic_catalog(15, 96, seed=25).paths()
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    ids, mask = left_pad([[5, 6, 7], [9, 10]])
    via_hf = model.generate(
        ids,
        attention_mask=mask,
        custom_generate=custom_generate,
        trie=trie,
        alpha=0.3,
        num_beams=4,
        num_return_sequences=4,
        length_penalty=1.0,
        pad_token_id=PAD,
        eos_token_id=EOS,
    )
    direct = generate(model, ids, mask, trie=trie, num_beams=4, alpha=0.3, length_penalty=1.0)
    assert torch.equal(via_hf.item_ids, direct.item_ids)
    torch.testing.assert_close(via_hf.scores, direct.scores, rtol=0, atol=0)


def test_repeated_calls_are_independent() -> None:
    model = tiny_llama(seed=10)
    trie = igdbeam.ItemTrie.from_token_ids(synthetic_catalog(15, 96, seed=26).paths())
    ids, mask = left_pad([[5, 6, 7], [9, 10]])
    a = generate(model, ids, mask, trie=trie, num_beams=3, alpha=0.1)
    generate(model, ids[:1, 1:], trie=trie, num_beams=5)
    b = generate(model, ids, mask, trie=trie, num_beams=3, alpha=0.1)
    assert torch.equal(a.item_ids, b.item_ids) and torch.equal(a.scores, b.scores)
    single = generate(model, ids[1:, 1:], trie=trie, num_beams=3, alpha=0.1)
    assert torch.equal(single.item_ids[0], a.item_ids[1])
    torch.testing.assert_close(single.scores[0], a.scores[1], rtol=0, atol=1e-5)


class _NoCacheLlama(LlamaForCausalLM):
    def forward(self, *args, **kwargs):  # noqa: D102 - test double
        out = super().forward(*args, **kwargs)
        out[cache_field_name()] = None
        return out


def test_bad_input() -> None:
    model = tiny_llama(seed=11)
    trie = igdbeam.ItemTrie.from_token_ids(synthetic_catalog(10, 96, seed=27).paths())
    ids = torch.tensor([[5, 6, 7]])
    for alpha in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            generate(model, ids, trie=trie, alpha=alpha)
    other = igdbeam.ItemTrie.from_token_ids([[100, 120, EOS]], vocab_size=200)
    with pytest.raises(ValueError, match="vocabulary"):
        generate(model, ids, trie=other)
    with pytest.raises(ValueError, match="another device|on meta"):
        generate(model, ids.to("meta"), trie=trie)
    with pytest.raises(ValueError, match="right-padded"):
        generate(model, ids, torch.tensor([[1, 1, 0]]), trie=trie)
    with pytest.raises(ValueError, match="num_return_sequences"):
        generate(model, ids, trie=trie, num_beams=2, num_return_sequences=3)
    no_cache = _NoCacheLlama(model.config).eval()
    with pytest.raises(ValueError, match="no KV cache"):
        generate(no_cache, ids, trie=trie)
    with pytest.raises(ValueError, match="early_stopping"):
        generate(model, ids, trie=trie, early_stopping="sometimes")
