"""Strict arguments of the decoding API: generate, generate_many, Decoding, IGDLogitsProcessor.

Property tests: any bad value of an argument (a float, bool, NaN or string where an integer is
due, a non-finite or out-of-range real, a non-bool flag) raises a ValueError naming that
argument before the model runs; any good value (Python or numpy numbers) gives what the
baseline call with plain Python values gives.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import igdbeam
from factories.catalogs import synthetic_catalog
from factories.ids import EOS
from factories.models import left_pad, tiny_llama
from igdbeam.decoding.kv_cache import KV_CACHE_MODES
from igdbeam.errors import InvalidIdError

VOCAB = 96
PROMPTS = [[5, 6, 7], [30, 31, 32, 33], [40]]
NAN, INF = math.nan, math.inf


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """One PyTorch intra-op thread for this module's tests (restored afterwards): the results
    do not depend on it, and on a busy machine OpenMP's spinning workers make each tiny-model
    call ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def _setup() -> tuple[Any, igdbeam.ItemTrie, torch.Tensor, torch.Tensor]:
    model = tiny_llama(seed=4)
    paths = synthetic_catalog(24, VOCAB, seed=41, max_len=5).paths()
    trie = igdbeam.ItemTrie.from_token_ids(paths, [1 + i % 4 for i in range(len(paths))])
    ids, mask = left_pad(PROMPTS)
    return model, trie, ids, mask


@functools.cache
def _baseline(num_beams: int) -> igdbeam.RecommendationOutput:
    model, trie, ids, mask = _setup()
    return igdbeam.generate(model, ids, mask, trie=trie, num_beams=num_beams, alpha=0.2)


def _count_forwards(model: torch.nn.Module) -> tuple[list[int], Any]:
    calls: list[int] = []
    return calls, model.register_forward_pre_hook(lambda *_: calls.append(1))


# ------------------------------------------------------------------ bad values
not_integers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),  # 2.7, 2.0, nan, inf, ...
    st.integers(1, 8).map(float),  # integral floats are refused too
    st.booleans(),
    st.text(max_size=3),
    st.just(np.float32(2.0)),
    st.just(torch.tensor(2.5)),
    st.just([2]),
)
not_reals = st.one_of(
    st.booleans(),
    st.text(max_size=3),
    st.just(None),
    st.just(1 + 2j),
    st.just([0.5]),
    st.just(np.bool_(True)),
)
non_finite = st.sampled_from([NAN, INF, -INF, np.float64(NAN), np.float32(INF)])
not_flags = st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=5), st.just(None))


def _bad_generate_args() -> st.SearchStrategy[tuple[str, Any]]:
    def named(name: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[str, Any]]:
        return st.tuples(st.just(name), values)

    return st.one_of(
        named("num_beams", st.one_of(not_integers, st.just(None), st.integers(max_value=0))),
        named("num_return_sequences", st.one_of(not_integers, st.integers(max_value=0))),
        named("num_return_sequences", st.integers(5, 10**6)),  # > num_beams = 4
        named("max_new_tokens", st.one_of(not_integers, st.integers(max_value=0))),
        named("pad_token_id", st.one_of(not_integers, st.integers(max_value=-1))),
        named("pad_token_id", st.integers(VOCAB, 2**62)),  # outside the model's vocabulary
        named("length_penalty", st.one_of(not_reals, non_finite)),
        named(
            "alpha",
            st.one_of(
                not_reals,
                non_finite,
                st.floats(max_value=-1e-9),
                st.floats(min_value=1.000001, allow_infinity=False),
            ),
        ),
        named("temperature", st.one_of(not_reals, non_finite, st.floats(max_value=0.0))),
        named("renormalize", not_flags),
        named(
            "early_stopping",
            st.one_of(st.integers(), st.floats(allow_nan=True), st.sampled_from(["", "Never"])),
        ),
        named("item_score_weight", st.one_of(not_reals, non_finite)),
        named(
            "kv_cache",
            st.one_of(st.text(max_size=4).filter(lambda v: v not in KV_CACHE_MODES), st.just(None)),
        ),
    )


@settings(max_examples=300, deadline=None)
@given(arg=_bad_generate_args())
def test_bad_generate_arguments_raise_before_any_work(arg: tuple[str, Any]) -> None:
    name, value = arg
    model, trie, ids, mask = _setup()
    calls, hook = _count_forwards(model)
    try:
        with pytest.raises(ValueError, match=name):
            igdbeam.generate(model, ids, mask, trie=trie, **{"num_beams": 4, name: value})
    finally:
        hook.remove()
    assert calls == []  # refused before the prompt forward


@settings(max_examples=150, deadline=None)
@given(arg=_bad_generate_args())
def test_bad_generate_many_arguments_raise(arg: tuple[str, Any]) -> None:
    """The same values through generate_many: the decoding fields inside a Decoding dict."""
    name, value = arg
    model, trie, ids, mask = _setup()
    fields = {"alpha", "length_penalty", "early_stopping", "renormalize", "temperature"}
    kw: dict[str, Any] = {"num_beams": 4}
    decoding: dict[str, Any] = {"alpha": 0.1}
    (decoding if name in fields else kw)[name] = value
    with pytest.raises(ValueError, match=name):
        igdbeam.generate_many(model, ids, mask, trie=trie, decodings=[decoding], **kw)


def test_the_issue_examples() -> None:
    """The values of issue 20 that used to be truncated or silently misread."""
    model, trie, ids, mask = _setup()
    cases = [
        ({"num_beams": 2.7}, ValueError, "num_beams must be an integer, got 2.7"),
        ({"num_return_sequences": 1.9}, ValueError, "num_return_sequences must be an integer"),
        ({"pad_token_id": 2.5}, InvalidIdError, "pad_token_id must be an integer, got 2.5"),
        ({"length_penalty": NAN}, ValueError, "length_penalty must be a finite number"),
        ({"length_penalty": -INF}, ValueError, "length_penalty must be a finite number"),
        ({"max_new_tokens": 0}, ValueError, "max_new_tokens must be an integer >= 1, got 0"),
        ({"max_new_tokens": -1}, ValueError, "max_new_tokens must be an integer >= 1, got -1"),
        ({"early_stopping": 1}, ValueError, "early_stopping must be True, False or 'never'"),
        ({"num_beams": True}, ValueError, r"num_beams must be an integer, got True \(bool\)"),
    ]
    for kw, error, message in cases:
        with pytest.raises(error, match=message):
            igdbeam.generate(model, ids, mask, trie=trie, **kw)
    with pytest.raises(ValueError, match="decodings must be a list"):
        igdbeam.generate_many(model, ids, mask, trie=trie, decodings=igdbeam.Decoding())


# ------------------------------------------------------------------ good values
int_types = st.sampled_from([int, np.int64, np.int32, np.uint8])


@settings(max_examples=30, deadline=None)
@given(
    beams=st.integers(1, 5),
    data=st.data(),
    as_type=int_types,
    max_new=st.one_of(st.none(), st.integers(0, 4)),
)
def test_good_integer_arguments_match_the_baseline(beams, data, as_type, max_new) -> None:
    """Python or numpy integers; ``num_return_sequences`` R <= K returns the first R of the
    K-hypothesis baseline; ``max_new_tokens`` at or beyond the trie's depth changes nothing."""
    model, trie, ids, mask = _setup()
    R = data.draw(st.integers(1, beams), label="num_return_sequences")
    max_new_tokens = None if max_new is None else trie.max_depth + max_new
    got = igdbeam.generate(
        model,
        ids,
        mask,
        trie=trie,
        num_beams=as_type(beams),
        num_return_sequences=as_type(R),
        max_new_tokens=None if max_new_tokens is None else as_type(max_new_tokens),
        alpha=np.float64(0.2),
    )
    want = _baseline(beams)
    assert torch.equal(got.item_ids, want.item_ids[:, :R])
    assert torch.equal(got.scores, want.scores[:, :R])
    assert torch.equal(got.lengths, want.lengths[:, :R])
    width = got.sequences.shape[-1]
    assert width == int(want.lengths[:, :R].max())
    assert torch.equal(got.sequences, want.sequences[:, :R, :width])


@settings(max_examples=20, deadline=None)
@given(pad=st.integers(0, VOCAB - 1), as_type=int_types)
def test_any_valid_pad_only_changes_the_padding(pad: int, as_type) -> None:
    model, trie, ids, mask = _setup()
    got = igdbeam.generate(
        model, ids, mask, trie=trie, num_beams=4, alpha=0.2, pad_token_id=as_type(pad)
    )
    want = _baseline(4)
    assert torch.equal(got.item_ids, want.item_ids)
    assert torch.equal(got.scores, want.scores)
    assert torch.equal(got.lengths, want.lengths)
    inside = torch.arange(got.sequences.shape[-1]) < got.lengths.unsqueeze(-1)
    assert torch.equal(got.sequences[inside], want.sequences[inside])
    assert bool((got.sequences[~inside] == pad).all())


@settings(max_examples=6, deadline=None)
@given(max_new=st.integers(1, 4))
def test_short_max_new_tokens_caps_the_items(max_new: int) -> None:
    """Every item returned under ``max_new_tokens=m`` is a catalog item of at most ``m``
    tokens (the search stops after ``m`` steps)."""
    model, trie, ids, mask = _setup()
    got = igdbeam.generate(
        model, ids, mask, trie=trie, num_beams=4, alpha=0.2, max_new_tokens=max_new
    )
    assert int(got.lengths.max()) <= max_new
    for b in range(len(PROMPTS)):
        for item, n in zip(got.item_ids[b].tolist(), got.lengths[b].tolist(), strict=True):
            assert (item < 0 and n == 0) or len(trie.item_path(item)) == n <= max_new


@settings(max_examples=20, deadline=None)
@given(
    lp=st.floats(-3, 3, allow_nan=False),
    as_type=st.sampled_from([float, np.float64, np.float32, int]),
)
def test_real_arguments_of_any_real_type(lp: float, as_type) -> None:
    """numpy floats and ints are accepted for reals and give the Python-float result."""
    model, trie, ids, mask = _setup()
    value = as_type(lp) if as_type is not int else int(round(lp))
    got = igdbeam.generate(model, ids, mask, trie=trie, num_beams=3, length_penalty=value)
    want = igdbeam.generate(model, ids, mask, trie=trie, num_beams=3, length_penalty=float(value))
    assert torch.equal(got.item_ids, want.item_ids)
    assert torch.equal(got.scores, want.scores)


# ------------------------------------------------------------------ the logits processor
def _bad_processor_args() -> st.SearchStrategy[tuple[str, Any]]:
    def named(name: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[str, Any]]:
        return st.tuples(st.just(name), values)

    return st.one_of(
        named("alpha", st.one_of(not_reals, non_finite, st.sampled_from([-0.1, 1.5]))),
        named("temperature", st.one_of(not_reals, non_finite, st.floats(max_value=0.0))),
        named("eos_token_id", st.one_of(not_integers, st.integers(max_value=-1))),
        named("prompt_length", st.one_of(not_integers, st.integers(max_value=-1))),
        named("renormalize", not_flags),
        named("validate", st.one_of(st.integers(), st.text(max_size=3))),
        named("item_score_weight", st.one_of(not_reals, non_finite)),
    )


@settings(max_examples=200, deadline=None)
@given(arg=_bad_processor_args())
def test_bad_processor_arguments_raise_in_the_constructor(arg: tuple[str, Any]) -> None:
    name, value = arg
    _, trie, _, _ = _setup()
    with pytest.raises(ValueError, match=name):
        igdbeam.IGDLogitsProcessor(trie, **{name: value})


@settings(max_examples=25, deadline=None)
@given(
    alpha=st.floats(0, 1),
    temperature=st.floats(0.25, 4),
    renormalize=st.booleans(),
    prompt_length=st.integers(1, 3),
    real_type=st.sampled_from([float, np.float64, np.float32]),
    int_type=int_types,
    seed=st.integers(0, 2**16),
)
def test_processor_numpy_arguments_match_python_ones(
    alpha, temperature, renormalize, prompt_length, real_type, int_type, seed
) -> None:
    """numpy values give the scores and nodes of the Python values they stand for."""
    _, trie, _, _ = _setup()
    path = trie.item_path(seed % trie.num_items)
    ids = torch.tensor([[4] * prompt_length + path[: seed % len(path)]])
    scores = torch.log_softmax(
        torch.randn(1, VOCAB, generator=torch.Generator().manual_seed(seed)), -1
    )
    typed = igdbeam.IGDLogitsProcessor(
        trie,
        real_type(alpha),
        renormalize=np.bool_(renormalize),
        temperature=real_type(temperature),
        eos_token_id=int_type(EOS),
        prompt_length=int_type(prompt_length),
    )
    plain = igdbeam.IGDLogitsProcessor(
        trie,
        float(real_type(alpha)),
        renormalize=renormalize,
        temperature=float(real_type(temperature)),
        eos_token_id=EOS,
        prompt_length=prompt_length,
    )
    want = plain(ids, scores.clone())
    got = typed(ids, scores.clone())
    assert torch.equal(got, want)
    assert torch.equal(typed.last_nodes, plain.last_nodes)
    assert int(plain.last_nodes[0]) >= 0  # the tokens are a path prefix: still on the trie
