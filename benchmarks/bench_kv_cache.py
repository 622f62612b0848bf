"""KV caches of igdbeam.generate: shared prefix vs dynamic vs transformers' beam search.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=python python -m pytest benchmarks/bench_kv_cache.py -q -s``
(``IGDBEAM_BENCH_QUICK=1``: a tiny model and 4 prompts x 4 beams, seconds, for CI). On a shared
machine pin one core for every side (``taskset -c 1``): the comparison is single-threaded.

A SmolLM2-135M-shaped random Llama (hidden 576, 30 layers, 9 heads over 3 KV heads, intermediate
1536, vocabulary 49,152, float32) decodes 16 (and 64) prompts of ~190 tokens with 10 beams over
a catalog of 1,700 items of ~13 tokens (MovieLens-like), D3-style (length_penalty 0, alpha 0.2):

* ``igdbeam`` — ``igdbeam.generate(kv_cache="shared_prefix")``;
* ``dynamic`` — ``igdbeam.generate(kv_cache="dynamic")`` (transformers' ``DynamicCache``);
* ``transformers`` — ``model.generate`` beam search with ``IGDLogitsProcessor``.

Groups ``... total`` time whole calls; groups ``... search`` report the beam search alone (the
prompt forward excluded): ``RecommendationOutput.seconds`` for igdbeam's two caches and, for
transformers, its total minus the prompt forward of the same prompts. The shared-prefix and
dynamic results are checked for the same items (and scores to 1e-4) after timing.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
import torch

import igdbeam
from benchmarks.conftest import QUICK
from factories.catalogs import synthetic_catalog
from factories.ids import EOS, PAD
from factories.models import tiny_llama
from igdbeam.app.pipeline import left_pad

BEAMS = 4 if QUICK else 10
PROMPT_COUNTS = [4] if QUICK else [16, 64]
PROMPT_LEN = (20, 28) if QUICK else (170, 210)
NUM_ITEMS = 200 if QUICK else 1_700
ALPHA = 0.2
RESULTS: dict[tuple[int, str], Any] = {}


def smollm2_shaped(seed: int = 0) -> Any:
    """SmolLM2-135M's architecture with random weights (a 2-layer toy in quick mode)."""
    if QUICK:
        vocab, size = 8_192, dict(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2)
    else:
        vocab, size = 49_152, dict(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3)
    return tiny_llama(
        vocab, seed, sharpen=None, max_positions=2048, tie_word_embeddings=True, **size
    )


def title_catalog(vocab: int, num_items: int, seed: int = 0) -> list[list[int]]:
    """Title-like paths: ~13 tokens on average (8-16 Zipf words plus EOS), common words shared."""
    return synthetic_catalog(num_items, vocab, seed=seed, zipf=1.2, min_len=8, max_len=16).paths()


@pytest.fixture(scope="module")
def setup():
    model = smollm2_shaped()
    vocab = model.config.vocab_size
    trie = igdbeam.ItemTrie.from_token_ids(title_catalog(vocab, NUM_ITEMS), vocab_size=vocab)
    return model, trie


def prompts(count: int, vocab: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    rng = random.Random(seed)
    rows = [
        [rng.randrange(3, vocab) for _ in range(rng.randint(*PROMPT_LEN))] for _ in range(count)
    ]
    return left_pad(rows, PAD)


def _prefill_seconds(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> float:
    """The prompt forward alone, as transformers' beam search runs it (all beams' rows)."""
    rows = ids.repeat_interleave(BEAMS, 0), mask.repeat_interleave(BEAMS, 0)
    t0 = time.perf_counter()
    with torch.no_grad():
        model(input_ids=rows[0], attention_mask=rows[1], use_cache=True, logits_to_keep=1)
    return time.perf_counter() - t0


@pytest.mark.parametrize("count", PROMPT_COUNTS, ids=lambda n: f"P{n}")
@pytest.mark.parametrize("impl", ["igdbeam", "dynamic", "transformers"])
def test_kv_cache(benchmark, ratios, setup, impl: str, count: int) -> None:
    model, trie = setup
    ids, mask = prompts(count, model.config.vocab_size)
    label = f"{count}x{BEAMS} L~{sum(PROMPT_LEN) // 2}"
    benchmark.group = f"kv_cache total {label}"
    role = impl
    if impl == "transformers":
        processor = igdbeam.IGDLogitsProcessor(trie, alpha=ALPHA)

        def run():
            return model.generate(
                ids,
                attention_mask=mask,
                num_beams=BEAMS,
                num_return_sequences=BEAMS,
                length_penalty=0.0,
                max_new_tokens=trie.max_depth,
                do_sample=False,
                pad_token_id=PAD,
                eos_token_id=EOS,
                logits_processor=[processor],
            )

    else:
        kv = "shared_prefix" if impl == "igdbeam" else "dynamic"

        def run():
            return igdbeam.generate(
                model, ids, mask, trie=trie, num_beams=BEAMS, alpha=ALPHA, kv_cache=kv
            )

    with torch.no_grad():
        out = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=1 if QUICK else 0)
    ratios.record(benchmark.group, role, benchmark)
    total = float(benchmark.stats.stats.mean)
    if impl == "transformers":
        search = total - _prefill_seconds(model, ids, mask)
    else:
        search = float(out.seconds)
        RESULTS[(count, impl)] = out
    # The search part (prompt forward excluded) goes into the ratio book as its own group.
    ratios.record_seconds(f"kv_cache search {label}", role, search)


@pytest.mark.parametrize("count", PROMPT_COUNTS, ids=lambda n: f"P{n}")
def test_zz_same_items(count: int) -> None:
    """The timed shared-prefix and dynamic runs returned the same recommendations."""
    shared, dynamic = RESULTS.get((count, "igdbeam")), RESULTS.get((count, "dynamic"))
    if shared is None or dynamic is None:
        pytest.skip("run the benchmarks of both caches first")
    assert torch.equal(shared.item_ids, dynamic.item_ids)
    torch.testing.assert_close(shared.scores, dynamic.scores, rtol=1e-5, atol=1e-4)
