"""Decoding benchmarks: the IGD processor step and igdbeam.generate against the baselines.

Run: ``PYTHONPATH=python python -m pytest benchmarks/bench_decode.py -q -s``
(``IGDBEAM_BENCH_QUICK=1`` shrinks every size to CI scale). On a shared machine also set
``OMP_NUM_THREADS=1``: torch's OpenMP workers spin-wait and the timings become noise when the
cores are oversubscribed (igdbeam's CPU kernels are single-threaded either way). Each
comparison checks correctness first, then times the implementations side by side
(pytest-benchmark groups) and records them in the ratio book (benchmarks/conftest.py), whose
table ends the run.

Comparisons:
* processor step, batch 16 x 10 beams, vocabularies 49,152 and 151,936: igdbeam's native step,
  a per-beam Python loop over a dict trie in the style of the public reference code
  (``TrieLogitsProcessor``), and transformers' ``PrefixConstrainedLogitsProcessor``
  (``prefix_allowed_tokens_fn``, constraint only, no IG weights);
* generation with a small random Llama: ``igdbeam.generate``, ``model.generate`` with
  ``IGDLogitsProcessor`` and unconstrained ``model.generate`` beam search.
"""

from __future__ import annotations

import random

import pytest
import torch
from transformers import LogitsProcessor
from transformers.generation.logits_process import PrefixConstrainedLogitsProcessor

import igdbeam
from benchmarks.conftest import QUICK
from factories.catalogs import synthetic_catalog
from factories.ids import EOS, PAD
from factories.models import tiny_llama
from igdbeam.app.pipeline import left_pad
from igdbeam.ops.decode_steps import processor_step

BATCH, BEAMS = (4, 4) if QUICK else (16, 10)
VOCABS = [8_192] if QUICK else [49_152, 151_936]
NUM_ITEMS = 2_000 if QUICK else 20_000
ALPHA = 0.2
ROUNDS = 3 if QUICK else 5


def make_catalog(vocab: int, num_items: int, seed: int = 0) -> list[list[int]]:
    """Item paths of 3-10 tokens below ~num_items/20 distinct first tokens (title-like shared
    prefixes), ending in EOS; also the catalog of ``bench_cuda_e2e.py``."""
    heads = max(num_items // 20, 10)
    return synthetic_catalog(
        num_items, vocab, seed=seed, min_len=3, max_len=10, heads=heads, alphabet=None
    ).paths()


class DictTrieLoopProcessor(LogitsProcessor):
    """The public reference code's style: a Python loop over beams and a dict trie.

    Per beam: ``tolist()`` of the generated tokens, a dict lookup of the children's entropies,
    the IG of each child in Python, min-max normalisation in torch, a multiplicative mask.
    """

    def __init__(self, trie: igdbeam.ItemTrie, prompt_length: int, alpha: float) -> None:
        self.prompt_length = prompt_length
        self.alpha = float(alpha)
        off = trie.child_offsets.tolist()
        tok = trie.token.tolist()
        ent = trie.entropy.tolist()
        parent = trie.parent.tolist()
        prefix: list[tuple[int, ...]] = [()] * trie.num_nodes
        self.children: dict[tuple[int, ...], tuple[float, dict[int, float]]] = {}
        for n in range(trie.num_nodes):
            if n > 0:
                prefix[n] = prefix[parent[n]] + (tok[n],)
            self.children[prefix[n]] = (
                ent[n],
                {tok[c]: ent[c] for c in range(off[n], off[n + 1])},
            )

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        mask = torch.full_like(scores, float("inf"))
        for r in range(input_ids.shape[0]):
            seq = input_ids[r].tolist()[self.prompt_length :]
            entry = self.children.get(tuple(seq))
            if entry is None:
                continue
            h, kids = entry
            if not kids:
                continue
            diffs = {t: h - hc for t, hc in kids.items()}
            tokens = list(diffs)
            d = torch.tensor(list(diffs.values()), dtype=torch.float, device=scores.device)
            lo, hi = d.min(), d.max()
            if hi > lo:
                mask[r, tokens] = 1.0 - self.alpha * (d - lo) / (hi - lo)
            else:
                mask[r, tokens] = 1.0
        return scores * mask


def prefix_fn(trie: igdbeam.ItemTrie, prompt_length: int):
    """A ``prefix_allowed_tokens_fn`` over a dict trie (constraint only)."""
    loop = DictTrieLoopProcessor(trie, prompt_length, 0.0)

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        entry = loop.children.get(tuple(sent.tolist()[prompt_length:]))
        return list(entry[1]) if entry and entry[1] else [EOS]

    return allowed


STEPS = 4  # decoding steps timed per round (generated depth 0, 1, 2, 3)


def step_inputs(paths: list[list[int]], vocab: int, seed: int = 1):
    """The processor's inputs at decoding steps 0..3: in step d every row holds the first d
    tokens of a random item after a 32-token prompt (the root has ~NUM_ITEMS/20 children)."""
    rng = random.Random(seed)
    rows = BATCH * BEAMS
    prompt = 32
    g = torch.Generator().manual_seed(seed)
    steps = []
    for depth in range(STEPS):
        gen = [rng.choice(paths)[:depth] for _ in range(rows)]
        ids = torch.tensor([[5] * prompt + x for x in gen], dtype=torch.long)
        scores = torch.log_softmax(torch.randn(rows, vocab, generator=g), dim=-1)
        steps.append((ids, scores))
    return steps, prompt


@pytest.fixture(scope="module", params=VOCABS, ids=lambda v: f"V{v}")
def step_case(request):
    vocab = request.param
    paths = make_catalog(vocab, NUM_ITEMS)
    trie = igdbeam.ItemTrie.from_token_ids(paths, vocab_size=vocab)
    steps, prompt = step_inputs(paths, vocab)
    loop = DictTrieLoopProcessor(trie, prompt, ALPHA)
    hf = PrefixConstrainedLogitsProcessor(prefix_fn(trie, prompt), BEAMS)
    # Correctness first: the native step equals the Python loop (IG weights) and, at alpha 0,
    # keeps exactly the tokens that prefix_allowed_tokens_fn allows.
    for ids, scores in steps:
        ours = scores.clone()
        processor_step(trie, ids, ours, prompt_length=prompt, alpha=ALPHA)
        # The loop derives IG from float32 entropies: agree to float32 rounding of IG.
        torch.testing.assert_close(ours, loop(ids, scores.clone()), rtol=1e-4, atol=1e-4)
        ours0 = scores.clone()
        processor_step(trie, ids, ours0, prompt_length=prompt)
        torch.testing.assert_close(ours0, hf(ids, scores.clone()), rtol=0, atol=0)
    return vocab, trie, steps, prompt, loop, hf


@pytest.mark.parametrize("impl", ["igdbeam", "python_loop", "prefix_allowed_tokens_fn"])
def test_processor_step(benchmark, ratios, step_case, impl: str) -> None:
    """One round = the processor at steps 0..3; the table reports the mean per step."""
    vocab, trie, steps, prompt, loop, hf = step_case
    group = f"processor step {BATCH}x{BEAMS} V={vocab}"
    benchmark.group = group

    def setup():
        return ([s.clone() for _, s in steps],), {}

    if impl == "igdbeam":

        def one(ids, s):
            processor_step(trie, ids, s, prompt_length=prompt, alpha=ALPHA)

    elif impl == "python_loop":

        def one(ids, s):
            loop(ids, s)

    else:

        def one(ids, s):
            hf(ids, s)

    def run(scores):
        for (ids, _), s in zip(steps, scores, strict=True):
            one(ids, s)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    ratios.record(group, impl, benchmark, per=STEPS)


# ---- generation --------------------------------------------------------------------------


def beam_search_kwargs(mask: torch.Tensor, trie: igdbeam.ItemTrie, beams: int) -> dict:
    """``model.generate`` keywords of the benchmarked beam search (D3-style, length_penalty 0)."""
    return dict(
        attention_mask=mask,
        num_beams=beams,
        num_return_sequences=beams,
        length_penalty=0.0,
        max_new_tokens=trie.max_depth,
        do_sample=False,
        return_dict_in_generate=True,
        output_scores=True,
        pad_token_id=PAD,
        eos_token_id=EOS,
    )


@pytest.fixture(scope="module")
def gen_case():
    vocab = VOCABS[0]
    model = tiny_llama(vocab, sharpen=None, hidden=64, intermediate=128, max_positions=256)
    paths = make_catalog(vocab, NUM_ITEMS // 4, seed=3)
    trie = igdbeam.ItemTrie.from_token_ids(paths, vocab_size=vocab)
    rng = random.Random(4)
    prompts = [[rng.randrange(3, vocab) for _ in range(rng.randint(20, 40))] for _ in range(BATCH)]
    ids, mask = left_pad(prompts, PAD)
    kw = beam_search_kwargs(mask, trie, BEAMS)
    # Correctness first: igdbeam.generate returns the processor path's items and scores.
    ours = igdbeam.generate(model, ids, mask, trie=trie, num_beams=BEAMS, alpha=ALPHA)
    hf = model.generate(ids, logits_processor=[igdbeam.IGDLogitsProcessor(trie, alpha=ALPHA)], **kw)
    hf_scores = hf.sequences_scores.view(BATCH, BEAMS)
    real = hf_scores > -1e8
    torch.testing.assert_close(ours.scores[real], hf_scores[real], rtol=0, atol=1e-4)
    return model, trie, ids, mask, kw


@pytest.mark.parametrize(
    "impl", ["igdbeam.generate", "generate+IGDLogitsProcessor", "unconstrained"]
)
def test_generate(benchmark, ratios, gen_case, impl: str) -> None:
    model, trie, ids, mask, kw = gen_case
    group = f"generate {BATCH}x{BEAMS} V={VOCABS[0]} (random Llama, 2x64)"
    benchmark.group = group
    if impl == "igdbeam.generate":

        def run():
            igdbeam.generate(model, ids, mask, trie=trie, num_beams=BEAMS, alpha=ALPHA)

    elif impl == "unconstrained":

        def run():
            model.generate(ids, **kw)

    else:

        def run():
            model.generate(
                ids, logits_processor=[igdbeam.IGDLogitsProcessor(trie, alpha=ALPHA)], **kw
            )

    benchmark.pedantic(run, rounds=max(ROUNDS - 2, 1), iterations=1, warmup_rounds=1)
    ratios.record(group, "igdbeam" if impl == "igdbeam.generate" else impl, benchmark)
