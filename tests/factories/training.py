"""Trainer fixtures of the training tests: datasets, quiet CPU arguments, rows, a tiny Llama.

The training tests share a 48-token vocabulary (the words of :func:`factories.models.
word_tokenizer`): item paths use tokens 3..29, histories 30..39 and user tokens 40..47.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from factories.ids import BOS, EOS
from factories.models import tiny_llama

if TYPE_CHECKING:
    from transformers import PreTrainedModel, TrainingArguments

VOCAB = 48

# One exact SGD step per batch: lr as given, no decay, warm-up or clipping (updates = -lr * grad).
EXACT_SGD: dict[str, Any] = {
    "optim": "sgd",
    "lr_scheduler_type": "constant",
    "weight_decay": 0.0,
    "max_grad_norm": 0.0,
    "warmup_steps": 0,
}


class ListDataset(torch.utils.data.Dataset):
    """A list of feature dicts."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def run_kwargs(out: Path, **overrides: Any) -> dict[str, Any]:
    """Keywords of a quiet, deterministic CPU run (TrainingArguments or trl's SFTConfig): batches
    of 4, 30 steps at lr 5e-3, no saving, logging, evaluation or progress bar, seed 0."""
    base: dict[str, Any] = {
        "output_dir": str(out),
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "learning_rate": 5e-3,
        "max_steps": 30,
        "report_to": [],
        "save_strategy": "no",
        "logging_strategy": "no",
        "eval_strategy": "no",
        "use_cpu": True,
        "remove_unused_columns": False,
        "disable_tqdm": True,
        "dataloader_pin_memory": False,
        "seed": 0,
    }
    base.update(overrides)
    return base


def training_args(out: Path, **overrides: Any) -> TrainingArguments:
    """``TrainingArguments`` of :func:`run_kwargs`."""
    import transformers

    return transformers.TrainingArguments(**run_kwargs(out, **overrides))


def training_llama(
    seed: int = 0, *, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2
) -> PreTrainedModel:
    """The random float32 Llama of the training tests over the 48-token vocabulary."""
    return tiny_llama(
        VOCAB,
        seed,
        layers=layers,
        sharpen=None,
        hidden=hidden,
        intermediate=2 * hidden,
        heads=heads,
        kv_heads=kv_heads,
        max_positions=64,
    )


def shared_prefix_items(seed: int = 0) -> list[list[int]]:
    """Twelve item paths with shared prefixes (so some edges have zero IG), EOS-terminated."""
    rng = random.Random(seed)
    items: set[tuple[int, ...]] = set()
    while len(items) < 12:
        head = rng.choice([(3, 4), (5,), (6, 7, 8), (9,)])
        tail = tuple(rng.randrange(10, 30) for _ in range(rng.randint(1, 3)))
        items.add(head + tail + (EOS,))
    return [list(p) for p in sorted(items)]


def completion_rows(
    items: list[list[int]],
    n: int,
    seed: int,
    *,
    history: tuple[int, int] = (2, 5),
    counterfactual: bool = True,
) -> list[dict]:
    """``n`` rows: a prompt of BOS, a history of ``history`` item-ish tokens (30..39) and a user
    token that determines the target item, the item's path as completion, and (with
    ``counterfactual``) the history-free prompt of the CFT loss."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randrange(len(items))
        past = [rng.randrange(30, 40) for _ in range(rng.randint(*history))]
        user = [40 + k % 8]
        row = {"prompt_ids": [BOS, *past, *user], "completion_ids": items[k]}
        if counterfactual:
            row["cf_prompt_ids"] = [BOS, *user]
        rows.append(row)
    return rows
