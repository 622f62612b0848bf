"""The shared-prefix KV cache: the cache's reorders, and generate with it.

Every result of the ``shared_prefix`` cache is compared with an independent reference: the model
run with transformers' DynamicCache (logits step by step), igdbeam's ``dynamic`` path and
transformers' own beam search with ``IGDLogitsProcessor`` (items and scores). The attention
itself is checked in ``test_cascade_attention.py``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel

import igdbeam
from cuda_testing import assert_within_reference_error
from factories.catalogs import synthetic_catalog
from factories.ids import EOS
from factories.models import left_pad, tiny_llama
from generate_checks import assert_same_hypotheses, ours_hypotheses, processor_path
from igdbeam.decoding.generate import Decoding, generate, generate_many
from igdbeam.decoding.kv_cache import (
    ATTENTION_NAME,
    KV_KWARG,
    SharedPrefixCache,
    decode_forward,
    resolve_kv_cache,
    shared_prefix_support,
)
from oracles.decode import brute_force_scores
from oracles.trie import ReferenceTrie

PROMPTS = [[5, 6, 7], [30, 31, 32, 33, 34, 35, 36], [40], [41, 42, 43, 44]]


def _prefill(model, ids, mask):
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
        )
    return out.cache, position_ids[:, -1:]


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral"])
def test_decode_steps_match_dynamic_cache(kind: str) -> None:
    """Random beam reorders, width changes and dropped prompts: logits equal DynamicCache's."""
    model = tiny_llama(family=kind, seed=3)
    ids, mask = left_pad(PROMPTS)
    dynamic, last_pos = _prefill(model, ids, mask)
    shared = SharedPrefixCache.from_dynamic(dynamic, mask)
    g = torch.Generator().manual_seed(7)
    prompts = torch.arange(len(PROMPTS))  # original prompt of each batch line
    beams = 1
    full_mask, positions = mask, last_pos
    # (prompts kept as positions into the current lines, beams per prompt) per step
    plan = [(None, 3), (None, 3), ([0, 2, 3], 3), ([0, 2], 2), (None, 2), ([1], 1)]
    for keep, width in plan:
        lines = torch.arange(len(prompts)) if keep is None else torch.tensor(keep)
        src = torch.randint(0, beams, (len(lines), width), generator=g)
        rows = lines.unsqueeze(1) * beams + src  # [prompts, beams] into the current rows
        flat = rows.reshape(-1)
        dynamic.reorder_cache(flat)
        shared.reorder_beams(rows)
        full_mask, positions = full_mask[flat], positions[flat] + 1
        prompts, beams = prompts[lines], width
        full_mask = torch.cat((full_mask, torch.ones(len(flat), 1, dtype=full_mask.dtype)), 1)
        tokens = torch.randint(3, 96, (len(flat), 1), generator=g)
        inputs = dict(input_ids=tokens, attention_mask=full_mask, position_ids=positions)
        with torch.no_grad():
            want = model(**inputs, cache=dynamic, use_cache=True).logits
            got = decode_forward(model, dict(inputs, cache=shared, use_cache=True), shared).logits
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        assert shared.num_prompts == len(prompts) and shared.beams == width
        assert shared.get_seq_length() == dynamic.get_seq_length()
        # The prefix is kept once per prompt still in the batch, the suffix per beam.
        layer = shared.layers[0]
        assert layer.prefix_keys.shape[:3] == (len(prompts), 2, ids.shape[1])
        assert layer.keys.shape[:3] == (len(flat), 2, full_mask.shape[1] - ids.shape[1])
    assert model.config._attn_implementation == "sdpa"  # restored after every step


def test_reorder_cache_is_a_within_prompt_beam_reorder() -> None:
    model = tiny_llama(seed=2)
    ids, mask = left_pad(PROMPTS[:2])
    dynamic, _ = _prefill(model, ids, mask)
    shared = SharedPrefixCache.from_dynamic(dynamic, mask)
    shared.reorder_beams(torch.tensor([[0, 0, 0], [1, 1, 1]]))
    layer = shared.layers[0]
    layer.update(torch.arange(6.0).view(6, 1, 1, 1).expand(6, 2, 1, 8), torch.zeros(6, 2, 1, 8))
    shared.reorder_cache(torch.tensor([2, 2, 0, 5, 3, 3]))
    assert layer.keys[:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0, 5.0, 3.0, 3.0]
    assert shared.num_prompts == 2 and shared.beams == 3
    with pytest.raises(ValueError, match="rows must be"):
        shared.reorder_beams(torch.zeros(3, 1, dtype=torch.long))


def _decode_calls(model) -> tuple[list[dict], torch.utils.hooks.RemovableHandle]:
    """Record the keyword arguments of every forward of ``model`` (a forward pre-hook: it also
    sees the forwards of the attention view that shared-prefix decoding runs, which shares the
    model's hooks); returns the calls and the hook's handle."""
    calls: list[dict] = []

    def spy(module, args, kwargs):
        calls.append(kwargs)

    return calls, model.register_forward_pre_hook(spy, with_kwargs=True)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize(("alpha", "lp"), [(0.0, 0.0), (0.3, 0.0), (0.2, 1.0)])
def test_generate_equals_dynamic_and_processor_path(kind: str, alpha: float, lp: float) -> None:
    """Left padding, prompts of different lengths, GQA, IGD weights and length penalties."""
    model = tiny_llama(family=kind, seed=4)
    paths = synthetic_catalog(24, 96, seed=41, max_len=5).paths()
    weights = [1 + (i * 7) % 5 for i in range(len(paths))]
    trie = igdbeam.ItemTrie.from_token_ids(paths, weights)
    ids, mask = left_pad(PROMPTS)
    kw = dict(trie=trie, num_beams=5, alpha=alpha, length_penalty=lp)
    calls, spy = _decode_calls(model)
    shared = generate(model, ids, mask, **kw)  # auto = shared_prefix for these families
    assert len(calls) > 1 and all(isinstance(c.get(KV_KWARG), SharedPrefixCache) for c in calls[1:])
    dynamic = generate(model, ids, mask, kv_cache="dynamic", **kw)
    assert torch.equal(shared.item_ids, dynamic.item_ids)
    assert torch.equal(shared.sequences, dynamic.sequences)
    torch.testing.assert_close(shared.scores, dynamic.scores, rtol=0, atol=1e-5)
    spy.remove()
    theirs = processor_path(model, ids, mask, trie, ReferenceTrie(paths, weights), 5, alpha, lp)
    assert_same_hypotheses(ours_hypotheses(shared, trie), theirs)
    assert model.config._attn_implementation == "sdpa"


def _long_tail_catalog() -> list[list[int]]:
    short = synthetic_catalog(30, 96, seed=31, max_len=2).paths()
    long = [[7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, EOS], [7, 8, 9, 10, 11, 20, EOS]]
    return short + long


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_rows_dropping_out_mid_search(kind: str, early_stopping: bool) -> None:
    """Prompts stop and beam slots empty while others run on: the prefix is compacted."""
    model = tiny_llama(family=kind, seed={"llama": 16, "qwen2": 20}[kind])  # seeds where rows drop
    paths = _long_tail_catalog()
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    ids, mask = left_pad([[7, 8], [3], [50, 51, 52], [7, 8, 9, 10], [60, 61], [12, 13, 14]])
    kw = dict(trie=trie, num_beams=4, early_stopping=early_stopping)
    calls, spy = _decode_calls(model)
    shared = generate(model, ids, mask, **kw)
    rows = [c["input_ids"].shape[0] for c in calls[1:]]
    assert len(set(rows)) > 2 and rows[-1] < rows[0]  # the batch shrank during the search
    spy.remove()
    dynamic = generate(model, ids, mask, kv_cache="dynamic", **kw)
    assert torch.equal(shared.item_ids, dynamic.item_ids)
    torch.testing.assert_close(shared.scores, dynamic.scores, rtol=0, atol=1e-5)
    ref = ReferenceTrie(paths)
    theirs = processor_path(model, ids, mask, trie, ref, 4, 0.0, 0.0, early_stopping)
    assert_same_hypotheses(ours_hypotheses(shared, trie), theirs)


def assert_bf16_scores_by_rule(model, trie, shared, dynamic, alpha: float) -> None:
    """The low-precision rule for a bf16 model's shared-prefix scores: their error against the
    same model in float32 (teacher-forced scores of the returned items, summed in float64) is at
    most 2x that of transformers' bf16 cache (``dynamic``), on the same items. Root mean square
    errors: over a few beam scores the largest error alone swings (0.7-1.7x between seeds)."""
    items = shared.item_ids.cpu()
    assert torch.equal(items, dynamic.item_ids.cpu())
    exact = copy.deepcopy(model).float().cpu()
    paths = [tuple(trie.item_path(i)) for i in range(trie.num_items)]
    ref = ReferenceTrie(paths)
    oracle = torch.full(items.shape, float("-inf"), dtype=torch.float64)
    for b, prompt in enumerate(PROMPTS):
        scores = brute_force_scores(exact, prompt, ref, alpha, 0.0)
        for j, item in enumerate(items[b].tolist()):
            if item >= 0:
                oracle[b, j] = scores[paths[item]]
    assert_within_reference_error(shared.scores, dynamic.scores, oracle, statistic="rms")


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_bf16_equals_dynamic_bf16(kind: str) -> None:
    """bf16 models: the shared prefix computes attention in float32, SDPA in bf16."""
    model = tiny_llama(family=kind, seed=8, dtype=torch.bfloat16)
    trie = igdbeam.ItemTrie.from_token_ids(synthetic_catalog(20, 96, seed=24).paths())
    ids, mask = left_pad(PROMPTS)
    shared = generate(model, ids, mask, trie=trie, num_beams=4, alpha=0.2)
    dynamic = generate(model, ids, mask, trie=trie, num_beams=4, alpha=0.2, kv_cache="dynamic")
    assert shared.scores.dtype == torch.float32
    assert_bf16_scores_by_rule(model, trie, shared, dynamic, alpha=0.2)


def test_generate_many_shares_the_prompt_cache() -> None:
    """Several searches adopt the same prompt KV without copying it; results equal dynamic."""
    model = tiny_llama(family="qwen2", seed=12)
    paths = _long_tail_catalog()
    trie = igdbeam.ItemTrie.from_token_ids(paths, [1 + i % 5 for i in range(len(paths))])
    ids, mask = left_pad(PROMPTS)
    decodings = [Decoding(0.0, 1.0), Decoding(0.0, 0.0), Decoding(0.3, 0.0), Decoding(0.1, 0.5)]
    shared = generate_many(model, ids, mask, trie=trie, decodings=decodings, num_beams=5)
    dynamic = generate_many(
        model, ids, mask, trie=trie, decodings=decodings, num_beams=5, kv_cache="dynamic"
    )
    for s, d in zip(shared, dynamic, strict=True):
        assert torch.equal(s.item_ids, d.item_ids)
        torch.testing.assert_close(s.scores, d.scores, rtol=0, atol=1e-5)


def test_eager_prompt_forward() -> None:
    """The prompt forward keeps the model's own attention (here eager); decoding is cascade."""
    model = tiny_llama(seed=5)
    model.set_attn_implementation("eager")
    trie = igdbeam.ItemTrie.from_token_ids(synthetic_catalog(20, 96, seed=25).paths())
    ids, mask = left_pad(PROMPTS)
    shared = generate(model, ids, mask, trie=trie, num_beams=4, alpha=0.1)
    dynamic = generate(model, ids, mask, trie=trie, num_beams=4, alpha=0.1, kv_cache="dynamic")
    assert torch.equal(shared.item_ids, dynamic.item_ids)
    torch.testing.assert_close(shared.scores, dynamic.scores, rtol=0, atol=1e-5)
    assert model.config._attn_implementation == "eager"


def test_unmerged_peft_model() -> None:
    """A LoRA ``PeftModel`` decodes through its base model's attention layers."""
    peft = pytest.importorskip("peft")
    base = tiny_llama(seed=10)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    model = peft.get_peft_model(base, config).eval()
    with torch.no_grad():  # a non-zero adapter, so that it changes the outputs
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    trie = igdbeam.ItemTrie.from_token_ids(synthetic_catalog(20, 96, seed=29).paths())
    ids, mask = left_pad(PROMPTS)
    assert shared_prefix_support(model, 20) is None
    shared = generate(model, ids, mask, trie=trie, num_beams=4, alpha=0.2)
    dynamic = generate(model, ids, mask, trie=trie, num_beams=4, alpha=0.2, kv_cache="dynamic")
    assert torch.equal(shared.item_ids, dynamic.item_ids)
    torch.testing.assert_close(shared.scores, dynamic.scores, rtol=0, atol=1e-5)
    plain = generate(tiny_llama(seed=10), ids, mask, trie=trie, num_beams=4, alpha=0.2)
    assert not torch.allclose(plain.scores, dynamic.scores)  # the adapter was active


def _tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4, eos_token_id=EOS
    )
    return GPT2LMHeadModel(config).eval()


def test_other_models_fall_back_to_dynamic() -> None:
    model = _tiny_gpt2()
    trie = igdbeam.ItemTrie.from_token_ids(synthetic_catalog(12, 96, seed=26).paths())
    ids, mask = left_pad(PROMPTS[:2])
    assert "gpt2" in shared_prefix_support(model, 10)
    assert resolve_kv_cache(model, "auto", 10) == "dynamic"
    calls, spy = _decode_calls(model)
    auto = generate(model, ids, mask, trie=trie, num_beams=3)
    assert all(KV_KWARG not in c for c in calls)
    spy.remove()
    dynamic = generate(model, ids, mask, trie=trie, num_beams=3, kv_cache="dynamic")
    assert torch.equal(auto.item_ids, dynamic.item_ids)
    with pytest.raises(ValueError, match="not supported here: model type 'gpt2'"):
        generate(model, ids, mask, trie=trie, kv_cache="shared_prefix")


def test_sliding_window_shorter_than_the_sequence_falls_back() -> None:
    model = tiny_llama(family="mistral", seed=1, sliding_window=6)
    trie = igdbeam.ItemTrie.from_token_ids(synthetic_catalog(12, 96, seed=27).paths())
    ids, mask = left_pad(PROMPTS)  # 7 prompt tokens + up to 5 generated > 6
    assert "sliding window" in shared_prefix_support(model, ids.shape[1] + trie.max_depth)
    assert shared_prefix_support(model, 6) is None
    with pytest.raises(ValueError, match="sliding window"):
        generate(model, ids, mask, trie=trie, kv_cache="shared_prefix")
    auto = generate(model, ids, mask, trie=trie, num_beams=3)
    dynamic = generate(model, ids, mask, trie=trie, num_beams=3, kv_cache="dynamic")
    assert torch.equal(auto.item_ids, dynamic.item_ids)


def test_bad_kv_cache_and_misuse() -> None:
    model = tiny_llama(seed=6)
    trie = igdbeam.ItemTrie.from_token_ids(synthetic_catalog(10, 96, seed=28).paths())
    with pytest.raises(ValueError, match="kv_cache must be one of"):
        generate(model, torch.tensor([[5, 6]]), trie=trie, kv_cache="static")
    with pytest.raises(ValueError, match="kv_cache must be one of"):
        generate_many(model, torch.tensor([[5, 6]]), trie=trie, decodings=[{}], kv_cache="x")
    # The registered attention refuses to run outside igdbeam's decoding steps.
    model.config._attn_implementation = ATTENTION_NAME
    try:
        with pytest.raises(ValueError, match="runs only inside igdbeam's decoding steps"):
            model(torch.tensor([[5, 6]]))
    finally:
        model.config._attn_implementation = "sdpa"


def test_attention_implementation_restored_on_error() -> None:
    model = tiny_llama(seed=7)
    ids, mask = left_pad(PROMPTS[:2])
    cache = SharedPrefixCache.from_dynamic(_prefill(model, ids, mask)[0], mask)
    with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
        # 3 rows for a cache of 2: the suffix update fails inside the forward.
        decode_forward(model, dict(input_ids=torch.tensor([[5], [6], [7]]), cache=cache), cache)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_shared_prefix_equals_dynamic(dtype: torch.dtype) -> None:
    model = tiny_llama(family="qwen2", seed=9, dtype=dtype).to("cuda")
    paths = _long_tail_catalog()
    trie = igdbeam.ItemTrie.from_token_ids(paths).to("cuda")
    ids, mask = (t.to("cuda") for t in left_pad(PROMPTS))
    kw = dict(trie=trie, num_beams=4, alpha=0.2)
    shared = generate(model, ids, mask, kv_cache="shared_prefix", **kw)
    dynamic = generate(model, ids, mask, kv_cache="dynamic", **kw)
    assert shared.item_ids.is_cuda
    if dtype == torch.float32:
        assert torch.equal(shared.item_ids, dynamic.item_ids)
        torch.testing.assert_close(shared.scores, dynamic.scores, rtol=0, atol=1e-4)
    else:
        assert_bf16_scores_by_rule(model, trie, shared, dynamic, alpha=0.2)


@pytest.mark.assets
@pytest.mark.slow
def test_real_smollm2_equals_dynamic() -> None:
    """SmolLM2-135M (Llama, 9 heads over 3 KV heads, 30 layers) on MovieLens titles."""
    from igdbeam.app.assets import asset_path, load_model_and_tokenizer
    from igdbeam.data.movielens import read_recbole_items
    from igdbeam.training.prompts import TEMPLATES, trie_for_catalog

    model, tok = load_model_and_tokenizer("smollm2", dtype=torch.float32)
    titles = list(read_recbole_items(asset_path("ml-100k") / "ml-100k.item").values())
    trie = trie_for_catalog(titles[:300], tok, "igd")
    histories = [titles[5:15], titles[100:101], titles[40:44]]
    enc = tok([TEMPLATES["igd"].prompt(h) for h in histories], return_tensors="pt", padding=True)
    kw = dict(trie=trie, num_beams=6, alpha=0.2)
    shared = generate(model, enc.input_ids, enc.attention_mask, kv_cache="shared_prefix", **kw)
    dynamic = generate(model, enc.input_ids, enc.attention_mask, kv_cache="dynamic", **kw)
    assert torch.equal(shared.item_ids, dynamic.item_ids)
    torch.testing.assert_close(shared.scores, dynamic.scores, rtol=1e-5, atol=1e-5)
