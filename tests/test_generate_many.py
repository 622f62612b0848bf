"""generate_many (shared prompt forward, shared searches) and the batch compaction of generate."""

from __future__ import annotations

import sys

import pytest
import torch

import igdbeam
from factories.catalogs import synthetic_catalog
from factories.ids import EOS
from factories.models import left_pad, tiny_llama
from generate_checks import assert_same_hypotheses, ours_hypotheses, processor_path
from igdbeam.decoding.generate import Decoding, generate, generate_many
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


DECODINGS = [
    Decoding(alpha=0.0, length_penalty=1.0),  # BIGRec
    Decoding(alpha=0.0, length_penalty=0.0),  # D3
    Decoding(alpha=0.3, length_penalty=0.0),  # IGD
    Decoding(alpha=0.0, length_penalty=1.0, early_stopping="never"),
    Decoding(alpha=0.3, length_penalty=0.5, early_stopping=True),
    Decoding(alpha=0.3, length_penalty=0.0, renormalize=True),
    Decoding(alpha=0.1, length_penalty=1.0, temperature=0.7),
]


def _long_tail_catalog() -> list[list[int]]:
    """Many short titles and a few long chains: most prompts finish early, some run long."""
    short = synthetic_catalog(30, 96, seed=31, max_len=2).paths()
    long = [[7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, EOS], [7, 8, 9, 10, 11, 20, EOS]]
    return short + long


class _CountingModel:
    """Records the input shape of every forward of a model (a forward pre-hook: the attention
    view that shared-prefix decoding runs shares the model's hooks); ``remove()`` ends it."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.shapes: list[tuple[int, int]] = []
        self._hook = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs) -> None:
        self.shapes.append(tuple(kwargs["input_ids"].shape))

    def remove(self) -> None:
        self._hook.remove()


def test_generate_many_equals_one_generate_per_decoding() -> None:
    model = tiny_llama(seed=12)
    paths = _long_tail_catalog()
    trie = igdbeam.ItemTrie.from_token_ids(paths, [1 + i % 5 for i in range(len(paths))])
    ids, mask = left_pad([[5, 6, 7], [30, 31, 32, 33, 34], [40], [41, 42]])
    many = generate_many(model, ids, mask, trie=trie, decodings=DECODINGS, num_beams=5)
    assert len(many) == len(DECODINGS)
    for d, got in zip(DECODINGS, many, strict=True):
        one = generate(
            model,
            ids,
            mask,
            trie=trie,
            num_beams=5,
            alpha=d.alpha,
            length_penalty=d.length_penalty,
            early_stopping=d.early_stopping,
            renormalize=d.renormalize,
            temperature=d.temperature,
        )
        assert torch.equal(got.item_ids, one.item_ids), d
        torch.testing.assert_close(got.scores, one.scores, rtol=0, atol=1e-5)
        assert torch.equal(got.sequences, one.sequences) and torch.equal(got.lengths, one.lengths)
        assert got.seconds > 0 and got.prefill_seconds > 0


def test_dict_decodings_and_return_sequences() -> None:
    model = tiny_llama(seed=13)
    trie = igdbeam.ItemTrie.from_token_ids(synthetic_catalog(20, 96, seed=32).paths())
    ids, mask = left_pad([[5, 6, 7], [9]])
    a, b = generate_many(
        model,
        ids,
        mask,
        trie=trie,
        decodings=[{"alpha": 0.2}, {"alpha": 0.2, "length_penalty": 1.0}],
        num_beams=4,
        num_return_sequences=2,
    )
    assert a.item_ids.shape == (2, 2) and b.item_ids.shape == (2, 2)
    one = generate(model, ids, mask, trie=trie, num_beams=4, num_return_sequences=2, alpha=0.2)
    assert torch.equal(a.item_ids, one.item_ids)


def test_length_penalties_share_one_prompt_forward_and_one_search() -> None:
    model = tiny_llama(seed=14)
    trie = igdbeam.ItemTrie.from_token_ids(_long_tail_catalog())
    ids, mask = left_pad([[5, 6, 7], [30, 31, 32, 33, 34], [40]])
    calls = _CountingModel(model)
    steps = {}
    for lp in (0.0, 1.0):
        calls.shapes.clear()
        generate(model, ids, mask, trie=trie, num_beams=4, length_penalty=lp)
        steps[lp] = len(calls.shapes) - 1
    calls.shapes.clear()
    bigrec, d3, igd = generate_many(
        model,
        ids,
        mask,
        trie=trie,
        num_beams=4,
        decodings=[Decoding(0.0, 1.0), Decoding(0.0, 0.0), Decoding(0.3, 0.0)],
    )
    prompt_calls = [s for s in calls.shapes if s[1] > 1]
    assert prompt_calls == [tuple(ids.shape)]  # one prompt forward for all three
    assert bigrec.seconds == d3.seconds != igd.seconds  # BIGRec and D3 shared their search
    igd_steps = len(calls.shapes) - 1 - max(steps.values())
    assert igd_steps >= 1


def test_compaction_drops_empty_beam_slots() -> None:
    """Once only the long chain still runs, each prompt sends one row, not K, to the model."""
    model = tiny_llama(seed=15)
    paths = [[3, EOS], [4, EOS], [5, EOS], [6, 7, 8, 9, 10, 11, EOS]]
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    ids, mask = left_pad([[5, 6, 7], [30, 31, 32, 33, 34], [40], [7, 8, 9]])
    calls = _CountingModel(model)
    result = generate(model, ids, mask, trie=trie, num_beams=4, alpha=0.2)
    # Step 1 expands 4 prompts into 4 beams; from step 2 the chain is each prompt's only beam.
    assert [s[0] for s in calls.shapes[1:]] == [16, 4, 4, 4, 4, 4]
    assert sorted(result.item_ids[0].tolist()) == [0, 1, 2, 3]
    calls.remove()
    theirs = processor_path(model, ids, mask, trie, ReferenceTrie(paths), 4, 0.2, 0.0)
    assert_same_hypotheses(ours_hypotheses(result, trie), theirs)


def test_compaction_drops_stopped_prompts() -> None:
    """With early_stopping=True a prompt leaves the batch as soon as its K items are found."""
    model = tiny_llama(seed=18)
    paths = [[3, EOS], [4, EOS], [5, EOS], [6, 7, 8, 9, 10, EOS]]
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    prompts = [[5, 6, 7], [30, 31, 32, 33, 34], [40], [7, 8, 9], [11], [12, 13], [50, 60]]
    ids, mask = left_pad(prompts)
    calls = _CountingModel(model)
    result = generate(model, ids, mask, trie=trie, num_beams=3, early_stopping=True)
    B = len(prompts)
    # A prompt whose 3 best first tokens are the short titles is done after step 2; one that
    # kept the chain runs on with that single beam until it ends.
    with_chain = int((result.item_ids == 3).any(dim=1).sum())
    expected = [3 * B] + ([with_chain] * 4 if with_chain else [])
    assert [s[0] for s in calls.shapes[1:]] == expected
    assert 0 < with_chain < B  # both kinds occur for this seed
    calls.remove()
    theirs = processor_path(
        model, ids, mask, trie, ReferenceTrie(paths), 3, 0.0, 0.0, early_stopping=True
    )
    assert_same_hypotheses(ours_hypotheses(result, trie), theirs)


@pytest.mark.parametrize("lp", [0.0, 1.0])
def test_compacted_search_matches_processor_path_on_long_tails(lp: float) -> None:
    model = tiny_llama(seed=16)
    paths = _long_tail_catalog()
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    ids, mask = left_pad([[7, 8], [3], [50, 51, 52], [7, 8, 9, 10], [60, 61]])
    theirs = processor_path(model, ids, mask, trie, ReferenceTrie(paths), 6, 0.0, lp)
    result = generate(model, ids, mask, trie=trie, num_beams=6, length_penalty=lp)
    assert_same_hypotheses(ours_hypotheses(result, trie), theirs)


def test_generate_many_bad_input() -> None:
    model = tiny_llama(seed=17)
    trie = igdbeam.ItemTrie.from_token_ids(synthetic_catalog(10, 96, seed=33).paths())
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="decodings is empty"):
        generate_many(model, ids, trie=trie, decodings=[])
    with pytest.raises(ValueError, match="alpha"):
        generate_many(model, ids, trie=trie, decodings=[Decoding(alpha=1.5)])
    with pytest.raises(ValueError, match="temperature"):
        generate_many(model, ids, trie=trie, decodings=[{"temperature": 0.0}])
    with pytest.raises(TypeError):
        generate_many(model, ids, trie=trie, decodings=[{"beta": 0.1}])
