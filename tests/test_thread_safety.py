"""Concurrent decoding on one model: threads get what sequential calls get, nothing changes.

Every job (prompts plus settings) is first decoded alone; then 8 threads decode the jobs many
times at once, each thread starting on another job, and every concurrent result must equal the
sequential one exactly (item ids and float32 scores, bit for bit) for both KV caches, for
``generate_many`` and for transformers' ``generate`` with one shared ``IGDLogitsProcessor``.
Afterwards the model's config (attention implementation included) and weights are unchanged
and a plain forward gives the logits it gave before.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch

import igdbeam
from factories.catalogs import synthetic_catalog
from factories.ids import EOS, PAD
from factories.models import left_pad, tiny_llama
from igdbeam.decoding.kv_cache import (
    ATTENTION_NAME,
    SharedPrefixCache,
    attention_view,
    decode_forward,
    resolve_kv_cache,
    shared_prefix_support,
)

THREADS = 8
PROMPT_SETS = [
    [[5, 6, 7], [30, 31, 32, 33, 34, 35, 36], [40], [41, 42, 43, 44]],
    [[9, 10], [11]],
    [[50, 51, 52, 53, 54], [60, 61, 62], [70, 71], [12], [13, 14, 15]],
    [[20, 21, 22, 23]],
]
SETTINGS = [
    dict(num_beams=4, alpha=0.2),
    dict(num_beams=5, alpha=0.0, length_penalty=1.0),
    dict(num_beams=3, alpha=0.4, early_stopping="never", length_penalty=0.5),
    dict(num_beams=4, alpha=0.1, num_return_sequences=2, renormalize=True),
]


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """One PyTorch intra-op thread for this module's tests (restored afterwards): the results
    do not depend on it, and on a busy machine OpenMP's spinning workers make each tiny-model
    call ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _trie() -> igdbeam.ItemTrie:
    paths = synthetic_catalog(30, 96, seed=41, max_len=5).paths()
    return igdbeam.ItemTrie.from_token_ids(paths, [1 + (i * 7) % 5 for i in range(len(paths))])


def _jobs(device: str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]:
    jobs = []
    for i, prompts in enumerate(PROMPT_SETS):
        ids, mask = left_pad(prompts)
        jobs.append((ids.to(device), mask.to(device), SETTINGS[i % len(SETTINGS)]))
    return jobs


def _snapshot(model: torch.nn.Module) -> tuple[dict[str, Any], str, dict[str, torch.Tensor]]:
    config = model.config
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return config.to_dict(), config._attn_implementation, weights


def _assert_unchanged(model: torch.nn.Module, before, probe: torch.Tensor, logits: torch.Tensor):
    """Config, attention implementation and weights as ``before``; a forward still works and
    gives the logits it gave before the threads ran."""
    config_dict, attn, weights = before
    assert model.config._attn_implementation == attn
    assert model.config.to_dict() == config_dict
    now = model.state_dict()
    assert now.keys() == weights.keys()
    assert all(torch.equal(now[k], w) for k, w in weights.items())
    assert "forward" not in model.__dict__
    with torch.no_grad():
        assert torch.equal(model(probe).logits, logits)


def _run_concurrently(jobs: list[Any], rounds: int, call: Callable[[Any], Any]) -> list[list[Any]]:
    """Run ``call(jobs[(t + r) % len(jobs)])`` for ``rounds`` rounds in each of ``THREADS``
    threads started together; returns per job every result it got."""
    start = threading.Barrier(THREADS)

    def worker(t: int) -> list[tuple[int, Any]]:
        start.wait()
        out = []
        for r in range(rounds):
            j = (t + r) % len(jobs)
            out.append((j, call(jobs[j])))
        return out

    with ThreadPoolExecutor(THREADS) as pool:
        per_thread = list(pool.map(worker, range(THREADS)))
    results: list[list[Any]] = [[] for _ in jobs]
    for out in per_thread:
        for j, result in out:
            results[j].append(result)
    return results


def _assert_same_output(got: igdbeam.RecommendationOutput, want: igdbeam.RecommendationOutput):
    assert torch.equal(got.item_ids, want.item_ids)
    assert torch.equal(got.scores, want.scores)  # exact, not within a tolerance
    assert torch.equal(got.sequences, want.sequences)
    assert torch.equal(got.lengths, want.lengths)


def _check_generate(kv_cache: str, rounds: int, device: str = "cpu", family: str = "llama"):
    model = tiny_llama(family=family, seed=4).to(device)
    trie = _trie().to(device)
    jobs = _jobs(device)
    want_cache = "shared_prefix" if kv_cache == "auto" else "dynamic"
    assert resolve_kv_cache(model, kv_cache, 7 + trie.max_depth) == want_cache
    probe = torch.tensor([[5, 6, 7, 8]], device=device)
    with torch.no_grad():
        logits = model(probe).logits
    before = _snapshot(model)

    def call(job):
        ids, mask, kw = job
        return igdbeam.generate(model, ids, mask, trie=trie, kv_cache=kv_cache, **kw)

    sequential = [call(job) for job in jobs]
    for results, want in zip(_run_concurrently(jobs, rounds, call), sequential, strict=True):
        assert len(results) >= rounds * THREADS // len(jobs)
        for got in results:
            _assert_same_output(got, want)
    _assert_unchanged(model, before, probe, logits)
    # And sequential calls after the threads still give the same results.
    _assert_same_output(call(jobs[0]), sequential[0])


@pytest.mark.parametrize("kv_cache", ["auto", "dynamic"])
def test_concurrent_generate_equals_sequential(kv_cache: str) -> None:
    """8 threads x 8 rounds (64 calls) per cache, ~1-2 s each."""
    _check_generate(kv_cache, rounds=8)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("kv_cache", ["auto", "dynamic"])
def test_concurrent_generate_stress(kv_cache: str, family: str) -> None:
    """8 threads x 40 rounds (320 calls) per case."""
    _check_generate(kv_cache, rounds=40, family=family)


@pytest.mark.slow
@pytest.mark.parametrize("kv_cache", ["auto", "dynamic"])
def test_concurrent_generate_with_intra_op_threads(kv_cache: str) -> None:
    """The threads' operators also run on PyTorch's intra-op pool (2 threads)."""
    torch.set_num_threads(2)
    try:
        _check_generate(kv_cache, rounds=4)
    finally:
        torch.set_num_threads(1)


@pytest.mark.cuda
@pytest.mark.parametrize("kv_cache", ["auto", "dynamic"])
def test_concurrent_generate_cuda(kv_cache: str) -> None:
    _check_generate(kv_cache, rounds=6, device="cuda")


@pytest.mark.parametrize("kv_cache", ["auto", "dynamic"])
def test_concurrent_generate_many_equals_sequential(kv_cache: str) -> None:
    """Several decodings per call (shared and separate searches on one prompt forward)."""
    model = tiny_llama(family="qwen2", seed=12)
    trie = _trie()
    # Two searches: the first two decodings share one, the third runs its own.
    decodings = [
        igdbeam.Decoding(0.0, 1.0),
        igdbeam.Decoding(0.0, 0.5, "never"),
        igdbeam.Decoding(0.3, 0.0),
    ]
    jobs = [(ids, mask) for ids, mask, _ in _jobs()]
    probe = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        logits = model(probe).logits
    before = _snapshot(model)

    def call(job):
        ids, mask = job
        return igdbeam.generate_many(
            model, ids, mask, trie=trie, decodings=decodings, num_beams=4, kv_cache=kv_cache
        )

    sequential = [call(job) for job in jobs]
    for results, want in zip(_run_concurrently(jobs, 3, call), sequential, strict=True):
        for got in results:
            for g, w in zip(got, want, strict=True):
                _assert_same_output(g, w)
    _assert_unchanged(model, before, probe, logits)


# ------------------------------------------------------------------ the attention view
def test_attention_view_shares_weights_and_leaves_the_model_alone() -> None:
    model = tiny_llama(seed=3)
    view = attention_view(model)
    assert view is not model and view.config is not model.config
    assert view.config._attn_implementation == ATTENTION_NAME
    assert model.config._attn_implementation == "sdpa"
    assert view.model.layers[0].self_attn.config is view.config
    assert model.model.layers[0].self_attn.config is model.config
    # Only modules holding the config (and their ancestors) are copied; weights are shared.
    assert view.lm_head is model.lm_head
    assert view.model.embed_tokens is model.model.embed_tokens
    assert view.model.layers[1].self_attn.q_proj is model.model.layers[1].self_attn.q_proj
    assert dict(view.named_parameters()).keys() == dict(model.named_parameters()).keys()
    assert all(p is q for p, q in zip(view.parameters(), model.parameters(), strict=True))


def test_a_forward_that_bypasses_the_view_raises() -> None:
    """Decoding through the model itself (standard attention on the suffix alone) would be
    silently wrong: the per-forward layer count refuses it."""
    model = tiny_llama(seed=7)
    ids, mask = left_pad(PROMPT_SETS[1])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, use_cache=True)
    cache = SharedPrefixCache.from_dynamic(out.cache, mask)
    step = dict(input_ids=torch.tensor([[5], [6]]), cache=cache, use_cache=True)
    with torch.no_grad(), pytest.raises(RuntimeError, match="ran in 0 of 2 layers"):
        decode_forward(model, step, cache, view=model)
    assert model.config._attn_implementation == "sdpa"


def test_replaced_forward_falls_back_to_dynamic() -> None:
    """A module whose forward is replaced on the instance (a wrapper, accelerate's hooks) would
    bypass the view: ``auto`` decodes with the dynamic cache, ``shared_prefix`` says why."""
    model = tiny_llama(seed=5)
    trie = _trie()
    ids, mask = left_pad(PROMPT_SETS[0])
    want = igdbeam.generate(model, ids, mask, trie=trie, num_beams=4, kv_cache="dynamic")
    attn = model.model.layers[1].self_attn
    attn.forward = type(attn).forward.__get__(attn)
    assert "forward is replaced on the instance" in shared_prefix_support(model, 20)
    assert resolve_kv_cache(model, "auto", 20) == "dynamic"
    got = igdbeam.generate(model, ids, mask, trie=trie, num_beams=4)
    _assert_same_output(got, want)
    with pytest.raises(ValueError, match="forward is replaced on the instance"):
        igdbeam.generate(model, ids, mask, trie=trie, kv_cache="shared_prefix")


# ------------------------------------------------------------------ the logits processor
def _hf_generate(model, ids, mask, processor, beams: int) -> tuple[torch.Tensor, torch.Tensor]:
    out = model.generate(
        ids,
        attention_mask=mask,
        num_beams=beams,
        num_return_sequences=beams,
        length_penalty=0.0,
        max_new_tokens=6,
        do_sample=False,
        return_dict_in_generate=True,
        output_scores=True,
        pad_token_id=PAD,
        eos_token_id=EOS,
        logits_processor=[processor],
    )
    return out.sequences, out.sequences_scores


def test_shared_processor_across_threads() -> None:
    """One IGDLogitsProcessor (prompt length detected per call) serves 8 threads running
    transformers' beam search on different prompts: each gets what a fresh processor gives;
    ``last_nodes`` is the calling thread's."""
    model = tiny_llama(seed=4)
    trie = _trie()
    jobs = [(ids, mask, 2 + i % 3) for i, (ids, mask, _) in enumerate(_jobs())]
    sequential = [
        _hf_generate(model, ids, mask, igdbeam.IGDLogitsProcessor(trie, alpha=0.3), beams)
        for ids, mask, beams in jobs
    ]
    shared = igdbeam.IGDLogitsProcessor(trie, alpha=0.3)

    def call(job):
        ids, mask, beams = job
        got = _hf_generate(model, ids, mask, shared, beams)
        rows = shared.last_nodes.shape[0]
        return got, rows == ids.shape[0] * beams

    for results, want in zip(_run_concurrently(jobs, 3, call), sequential, strict=True):
        for (sequences, scores), own_rows in results:
            assert own_rows
            assert torch.equal(sequences, want[0])
            assert torch.equal(scores, want[1])
    # A copy (pickling drops the per-thread state and the lock) works the same.
    clone = copy.deepcopy(shared)
    ids, mask, beams = jobs[0]
    got = _hf_generate(model, ids, mask, clone, beams)
    assert torch.equal(got[0], sequential[0][0]) and torch.equal(got[1], sequential[0][1])


def test_processor_state_is_per_thread() -> None:
    """Two calls' steps interleaved across two threads on one processor (prompt length
    detected): each thread's step continues its own call, so each walks its own tokens."""
    trie = igdbeam.ItemTrie.from_token_ids([[10, 11, EOS], [10, 12, EOS], [20, EOS]])
    proc = igdbeam.IGDLogitsProcessor(trie)
    done = [threading.Event() for _ in range(3)]
    nodes: dict[str, int] = {}

    def run(name: str, prompt: list[int], token: int, wait: list[int], signal: list[int]):
        ids = torch.tensor([prompt])
        for step in range(2):
            if wait[step] >= 0:
                assert done[wait[step]].wait(timeout=30)
            proc(ids, torch.zeros(1, 30))
            if signal[step] >= 0:
                done[signal[step]].set()
            ids = torch.cat((ids, torch.tensor([[token]])), dim=1)
        nodes[name] = int(proc.last_nodes[0])

    # Order: a step 0, b step 0, a step 1 (prompt + [10]), b step 1 (prompt + [20]).
    ta = threading.Thread(target=run, args=("a", [7, 8, 9], 10, [-1, 1], [0, 2]))
    tb = threading.Thread(target=run, args=("b", [4, 5], 20, [0, 2], [1, -1]))
    ta.start()
    tb.start()
    ta.join()
    tb.join()
    tokens, children = trie.children(0)
    assert tokens.tolist() == [10, 20]
    assert nodes == {"a": int(children[0]), "b": int(children[1])}
