"""IGDLogitsProcessor and the processor_step op against independent Python references."""

from __future__ import annotations

import math
import random

import pytest
import torch

import igdbeam
from factories.catalogs import synthetic_catalog
from factories.ids import EOS, PAD
from factories.models import left_pad, tiny_llama
from igdbeam.decoding.processor import IGDLogitsProcessor
from igdbeam.ops.decode_steps import processor_step
from oracles.decode import (
    ReferenceIGDProcessor,
    hf_hypotheses,
    prefix_allowed_tokens_fn,
)
from oracles.trie import ReferenceTrie

NEG_INF = -math.inf
# Spec section 5, terminator id 2.
EXAMPLE_PATHS = [[10, 11, 12, 2], [10, 11, 13, 2], [10, 14, 2], [20, 21, 2]]
EXAMPLE_WEIGHTS = [4, 2, 1, 1]


def test_worked_example_exact_values() -> None:
    trie = igdbeam.ItemTrie.from_token_ids(EXAMPLE_PATHS, EXAMPLE_WEIGHTS)
    prompt = [7, 8]
    gens = [[], [10], [10, 11], [20], [10, 11, 12, 2], [30]]
    ids = torch.tensor([prompt + g + [PAD] * (4 - len(g)) for g in gens])
    # processor_step takes the generated tokens as input_ids[:, prompt_len:]; pad every row to
    # the same width by walking rows of equal length instead.
    scores0 = torch.log_softmax(
        torch.randn(len(gens), 40, generator=torch.Generator().manual_seed(0)), -1
    )
    alpha = 0.5
    expected = torch.full_like(scores0, NEG_INF)
    expected[0, 10] = scores0[0, 10]  # IG~ 0 at the root
    expected[0, 20] = (1 - alpha) * scores0[0, 20]  # IG~ 1
    expected[1, 11] = scores0[1, 11]
    expected[1, 14] = (1 - alpha) * scores0[1, 14]
    expected[2, 12] = scores0[2, 12]  # equal IG: IG~ 0 for both
    expected[2, 13] = scores0[2, 13]
    expected[3, 21] = scores0[3, 21]  # single child
    expected[4, EOS] = 0.0  # leaf: only the terminator, score 0
    for r, g in enumerate(gens):
        row = ids[r : r + 1, : len(prompt) + len(g)]
        s = scores0[r : r + 1].clone()
        nodes, status = processor_step(
            trie, row, s, prompt_length=len(prompt), alpha=alpha, eos_token_id=EOS
        )
        torch.testing.assert_close(s, expected[r : r + 1], rtol=0, atol=1e-7)
        assert int(status[0]) == (1 if r == 5 else 0)
        assert (int(nodes[0]) == -1) == (r == 5)


def _random_rows(paths: list[list[int]], rows: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    out = []
    for i in range(rows):
        p = rng.choice(paths)
        if i % 7 == 6:
            out.append(p[:1] + [1] + p[1:2])  # leaves the trie
        else:
            out.append(p[: rng.randint(0, len(p))])  # root .. leaf
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("renormalize", "temperature", "alpha"),
    [(False, 1.0, 0.0), (False, 1.0, 0.7), (True, 1.0, 0.3), (False, 0.7, 0.2), (True, 1.3, 1.0)],
)
def test_processor_step_matches_reference(
    dtype: torch.dtype, renormalize: bool, temperature: float, alpha: float
) -> None:
    vocab = 64
    paths = synthetic_catalog(30, vocab, seed=3).paths()
    weights = [1 + (i * 7) % 5 for i in range(len(paths))]
    trie = igdbeam.ItemTrie.from_token_ids(paths, weights)
    ref = ReferenceTrie(paths, weights)
    gens = _random_rows(paths, 40, seed=4)
    prompt_len = 3
    g = torch.Generator().manual_seed(5)
    raw = torch.randn(len(gens), vocab, generator=g) * 3
    raw = torch.log_softmax(raw, -1).to(dtype)
    for r, gen in enumerate(gens):
        ids = torch.tensor([[9] * prompt_len + gen])
        ours = raw[r : r + 1].clone()
        processor_step(
            trie,
            ids,
            ours,
            prompt_length=prompt_len,
            alpha=alpha,
            temperature=temperature,
            renormalize=renormalize,
            eos_token_id=EOS,
        )
        base = raw[r : r + 1].float()
        if temperature != 1.0:
            base = torch.log_softmax(base / temperature, -1)
        expected = ReferenceIGDProcessor(ref, prompt_len, alpha, renormalize, EOS)(
            ids, base.clone()
        )
        tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
        torch.testing.assert_close(ours.float(), expected, rtol=tol, atol=tol)


def test_processor_step_batch_and_strides() -> None:
    """Many rows in one call, non-contiguous scores: same as one row at a time."""
    vocab = 50
    paths = synthetic_catalog(25, vocab, seed=7).paths()
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    gens = _random_rows(paths, 24, seed=8)
    # All rows of one call share the prompt length, so group the rows by generated length.
    by_len: dict[int, list[list[int]]] = {}
    for x in gens:
        by_len.setdefault(len(x), []).append(x)
    for group in by_len.values():
        ids = torch.tensor([[4, 4] + x for x in group])
        full = torch.log_softmax(torch.randn(len(group), 2 * vocab), -1)
        strided = full[:, ::2]  # stride 2 in the vocab dim
        single = strided.clone()
        processor_step(trie, ids, strided, prompt_length=2, alpha=0.4)
        for r in range(len(group)):
            one = single[r : r + 1].clone()
            processor_step(trie, ids[r : r + 1], one, prompt_length=2, alpha=0.4)
            torch.testing.assert_close(strided[r : r + 1], one, rtol=0, atol=0)


def test_nan_scores_raise() -> None:
    trie = igdbeam.ItemTrie.from_token_ids(EXAMPLE_PATHS)
    s = torch.zeros(1, 30)
    s[0, 10] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        processor_step(trie, torch.tensor([[5]]), s, prompt_length=1)


def test_bad_arguments() -> None:
    trie = igdbeam.ItemTrie.from_token_ids(EXAMPLE_PATHS, vocab_size=30)
    with pytest.raises(ValueError, match="alpha"):
        IGDLogitsProcessor(trie, alpha=1.5)
    with pytest.raises(ValueError, match="alpha"):
        IGDLogitsProcessor(trie, alpha=-0.1)
    with pytest.raises(ValueError, match="temperature"):
        IGDLogitsProcessor(trie, temperature=0.0)
    ids = torch.tensor([[5]])
    with pytest.raises(ValueError, match="vocabulary"):
        IGDLogitsProcessor(trie)(ids, torch.zeros(1, 25))  # trie built for 30 tokens
    small = igdbeam.ItemTrie.from_token_ids(EXAMPLE_PATHS)  # no vocab recorded, token 21
    with pytest.raises(ValueError, match="token id 21"):
        IGDLogitsProcessor(small)(ids, torch.zeros(1, 21))
    with pytest.raises(ValueError, match="dtype"):
        IGDLogitsProcessor(small)(ids, torch.zeros(1, 30, dtype=torch.float64))
    with pytest.raises(ValueError, match="rows"):
        IGDLogitsProcessor(small)(torch.tensor([[5], [5]]), torch.zeros(1, 30))


# ---- inside model.generate ----------------------------------------------------------------


def _catalog(kind: str, vocab: int) -> list[list[int]]:
    if kind == "random":
        return synthetic_catalog(14, vocab, seed=11).paths()
    if kind == "prefix":  # "A" and "A B": one title's path is a prefix of another's before EOS
        return [[5, EOS], [5, 6, EOS], [5, 6, 7, EOS], [8, 9, EOS], [8, 10, 11, EOS]]
    if kind == "single_child":  # a chain of single children below 12
        return [[12, 13, 14, 15, EOS], [16, EOS], [16, 17, EOS], [18, 19, EOS]]
    if kind == "tiny":  # fewer items than beams
        return [[20, 21, EOS], [22, EOS]]
    raise AssertionError(kind)


def _hf_kwargs(mask: torch.Tensor, beams: int, lp: float, depth: int) -> dict:
    return dict(
        attention_mask=mask,
        num_beams=beams,
        num_return_sequences=beams,
        length_penalty=lp,
        max_new_tokens=depth,
        do_sample=False,
        return_dict_in_generate=True,
        output_scores=True,
        pad_token_id=PAD,
        eos_token_id=EOS,
    )


@pytest.mark.parametrize("kind", ["random", "prefix", "single_child", "tiny"])
@pytest.mark.parametrize("lp", [0.0, 1.0])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5])
def test_generate_with_processor_matches_reference_processor(
    kind: str, lp: float, alpha: float
) -> None:
    model = tiny_llama()
    paths = _catalog(kind, 96)
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    ref = ReferenceTrie(paths)
    ids, mask = left_pad([[5, 6, 7], [30, 31, 32, 33, 34], [40]])
    kw = _hf_kwargs(mask, 4, lp, trie.max_depth)
    ours = model.generate(ids, logits_processor=[IGDLogitsProcessor(trie, alpha=alpha)], **kw)
    theirs = model.generate(
        ids, logits_processor=[ReferenceIGDProcessor(ref, ids.shape[1], alpha)], **kw
    )
    a = hf_hypotheses(ours.sequences, ours.sequences_scores, ids.shape[1], ref, 3)
    b = hf_hypotheses(theirs.sequences, theirs.sequences_scores, ids.shape[1], ref, 3)
    assert [[p for p, _ in row] for row in a] == [[p for p, _ in row] for row in b]
    for ra, rb in zip(a, b, strict=True):
        assert len(ra) == min(4, len(paths))
        for (_, sa), (_, sb) in zip(ra, rb, strict=True):
            assert sa == pytest.approx(sb, abs=1e-5)


@pytest.mark.parametrize("lp", [0.0, 1.0])
def test_alpha_zero_matches_prefix_allowed_tokens_fn(lp: float) -> None:
    model = tiny_llama(seed=1)
    paths = synthetic_catalog(20, 96, seed=2).paths()
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    ref = ReferenceTrie(paths)
    ids, mask = left_pad([[5, 6, 7, 8], [50, 51]])
    kw = _hf_kwargs(mask, 5, lp, trie.max_depth)
    ours = model.generate(ids, logits_processor=[IGDLogitsProcessor(trie)], **kw)
    theirs = model.generate(
        ids, prefix_allowed_tokens_fn=prefix_allowed_tokens_fn(ref, ids.shape[1], EOS), **kw
    )
    a = hf_hypotheses(ours.sequences, ours.sequences_scores, ids.shape[1], ref, 2)
    b = hf_hypotheses(theirs.sequences, theirs.sequences_scores, ids.shape[1], ref, 2)
    assert [[p for p, _ in row] for row in a] == [[p for p, _ in row] for row in b]
    for ra, rb in zip(a, b, strict=True):
        assert len(ra) == 5
        for (_, sa), (_, sb) in zip(ra, rb, strict=True):
            assert sa == pytest.approx(sb, abs=1e-5)


def test_bf16_model_matches_reference_processor() -> None:
    model = tiny_llama(seed=2, dtype=torch.bfloat16)
    paths = synthetic_catalog(16, 96, seed=5).paths()
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    ref = ReferenceTrie(paths)
    ids, mask = left_pad([[5, 6, 7], [9, 10]])
    kw = _hf_kwargs(mask, 4, 0.0, trie.max_depth)
    ours = model.generate(ids, logits_processor=[IGDLogitsProcessor(trie, alpha=0.2)], **kw)
    theirs = model.generate(
        ids, logits_processor=[ReferenceIGDProcessor(ref, ids.shape[1], 0.2)], **kw
    )
    a = hf_hypotheses(ours.sequences, ours.sequences_scores, ids.shape[1], ref, 2)
    b = hf_hypotheses(theirs.sequences, theirs.sequences_scores, ids.shape[1], ref, 2)
    assert [[p for p, _ in row] for row in a] == [[p for p, _ in row] for row in b]
    for ra, rb in zip(a, b, strict=True):
        for (_, sa), (_, sb) in zip(ra, rb, strict=True):
            assert sa == pytest.approx(sb, abs=1e-5)


def test_no_state_between_generate_calls() -> None:
    """One instance across calls with other prompt lengths and batch sizes = fresh instances."""
    model = tiny_llama(seed=3)
    paths = synthetic_catalog(12, 96, seed=6).paths()
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    shared = IGDLogitsProcessor(trie, alpha=0.3)
    batches = [
        left_pad([[5, 6, 7], [8]]),
        left_pad([[11, 12, 13, 14, 15, 16]]),
        left_pad([[5, 6, 7], [8]]),
        left_pad([[20, 21], [22, 23], [24, 25]]),
    ]
    for ids, mask in batches:
        kw = _hf_kwargs(mask, 3, 0.0, trie.max_depth)
        a = model.generate(ids, logits_processor=[shared], **kw)
        b = model.generate(ids, logits_processor=[IGDLogitsProcessor(trie, alpha=0.3)], **kw)
        c = model.generate(
            ids,
            logits_processor=[IGDLogitsProcessor(trie, alpha=0.3, prompt_length=ids.shape[1])],
            **kw,
        )
        assert torch.equal(a.sequences, b.sequences) and torch.equal(a.sequences, c.sequences)
        torch.testing.assert_close(a.sequences_scores, b.sequences_scores, rtol=0, atol=0)
