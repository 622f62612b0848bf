"""Tiny random Llama models and catalogs for the decoding tests (no download)."""

from __future__ import annotations

import random

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from igdbeam.app.pipeline import left_pad as pipeline_left_pad

EOS = 2
PAD = 0


def tiny_llama(
    vocab_size: int = 96, seed: int = 0, dtype: torch.dtype = torch.float32, layers: int = 2
) -> LlamaForCausalLM:
    """A 2-layer random Llama with EOS 2 and PAD 0, in eval mode."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    model = LlamaForCausalLM(config).eval()
    # Sharpen the random logits so that beams separate clearly.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model.to(dtype)


def random_catalog(
    num_items: int, vocab_size: int, seed: int = 0, max_len: int = 4, branch: int = 3
) -> list[list[int]]:
    """Distinct item paths over tokens [3, vocab), each ending in EOS, with shared prefixes."""
    rng = random.Random(seed)
    tokens = list(range(3, vocab_size))
    paths: set[tuple[int, ...]] = set()
    heads = rng.sample(tokens, branch)
    while len(paths) < num_items:
        length = rng.randint(1, max_len)
        body = [rng.choice(heads)] + [rng.choice(tokens[: 3 * branch]) for _ in range(length - 1)]
        paths.add(tuple(body) + (EOS,))
    return [list(p) for p in sorted(paths)]


def left_pad(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts with PAD; return (input_ids, attention_mask)."""
    return pipeline_left_pad(prompts, PAD)
