"""Data-parallel training gives the loss of the whole global batch.

Two CPU processes (``accelerate launch --multi_gpu``: torchrun + DDP over gloo) with per-device
batches of 2 (or 1 with 2 accumulation steps) must end with the same parameters, to 1e-5, as one
process with batches of 4 over the same rows in the same order: plain SGD, float32, sequential
sampling (accelerate deals batch ``i`` to process ``i % 2``, so global step ``s`` holds rows
``4s .. 4s + 3`` in both runs). Rows differ in length and in IGD weight sum, so a loss
normalised by each process's own ``Omega`` (or token count) moves the parameters differently;
the test shows that with the stock Trainer and ``average_tokens_across_devices=False``.

Run as a script (``python tests/test_distributed_training.py OUT_DIR`` under ``accelerate
launch``) this module is the worker: it trains every configuration and saves each process's
final parameters under ``OUT_DIR``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from factories.cli import subprocess_env
from factories.ids import BOS, EOS, PAD
from factories.models import word_tokenizer
from factories.training import EXACT_SGD, VOCAB, run_kwargs, training_llama

BETA = 0.1
ITEMS = [
    [3, 4, 10, EOS],
    [3, 4, 11, 12, EOS],
    [3, 4, 11, 13, EOS],
    [5, 14, EOS],
    [5, 15, 16, 17, 18, EOS],
    [6, 7, 8, 19, EOS],
    [9, 20, EOS],
]
WEIGHTS = [4, 2, 1, 3, 1, 2, 1]
NUM_ROWS, STEPS, GLOBAL_BATCH = 8, 2, 4

# name -> (trainer kind, per-device batch, accumulation steps, average_tokens_across_devices)
CONFIGS: dict[str, tuple[str, int, int, bool]] = {
    "igd": ("igd", 2, 1, True),
    "igd_accumulated_no_avg": ("igd", 1, 2, False),
    "igd_tokens_no_avg": ("igd_tokens", 2, 1, False),
    "igd_lora": ("igd_lora", 2, 1, True),
    "stock": ("stock", 1, 2, True),
    "stock_no_avg": ("stock", 2, 1, False),  # the negative control: per-process token mean
    "sft": ("sft", 2, 1, True),
    "sft_no_avg_logits": ("sft_logits", 2, 1, False),
}
NOT_GLOBAL = {"stock_no_avg"}  # transformers normalises per process there (documented)


def make_rows() -> list[dict[str, list[int]]]:
    """Rows of different prompt lengths and targets (so each process's Omega differs)."""
    rng = random.Random(0)
    rows = []
    for i in range(NUM_ROWS):
        k = [0, 4, 6, 1, 3, 5, 2, 4][i]
        history = [rng.randrange(30, 40) for _ in range(1 + (i * 3) % 5)]
        rows.append({"prompt_ids": [BOS, *history, 40 + k], "completion_ids": ITEMS[k]})
    return rows


def _sequential(cls: type) -> type:
    """``cls`` with a sequential training sampler (the same row order in every run)."""

    class Sequential(cls):  # type: ignore[misc, valid-type]
        def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
            data = args[0] if args and args[0] is not None else self.train_dataset
            return torch.utils.data.SequentialSampler(data)

    return Sequential


def trainable_params(model: torch.nn.Module) -> torch.Tensor:
    """The trainable parameters, flattened into one float32 vector (a copy)."""
    return torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad]).clone()


def train_params(
    kind: str, batch: int, accumulation: int, average: bool, out: Path, initial: dict | None = None
) -> torch.Tensor:
    """Train one configuration; return its flattened trainable parameters after the run.

    ``initial``, when given, receives the parameters before training under ``kind``.
    """
    import transformers

    from igdbeam import CompletionCollator, IGDTrainer, ItemTrie, make_compute_loss_func

    trie = ItemTrie.from_token_ids(ITEMS, weights=WEIGHTS, vocab_size=VOCAB)
    common = run_kwargs(
        out,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=STEPS,
        learning_rate=1.0,
        average_tokens_across_devices=average,
        **EXACT_SGD,
    )
    rows = make_rows()
    collator = CompletionCollator(PAD)
    model = training_llama(hidden=16, layers=1, heads=2, kv_heads=1)
    if kind == "igd_lora":
        import peft

        from igdbeam import lora_config

        torch.manual_seed(1)
        model = peft.get_peft_model(model, lora_config(r=2, dropout=0.0, init_lora_weights=False))
    if kind.startswith("sft"):
        import datasets
        import trl

        from igdbeam import IGDSFTTrainer

        args = trl.SFTConfig(
            **common, dataset_kwargs={"skip_prepare_dataset": True}, max_length=None, bf16=False
        )
        trainer = _sequential(IGDSFTTrainer)(
            model=model,
            args=args,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=word_tokenizer(VOCAB),
            data_collator=collator,
            trie=trie,
            beta=BETA,
            fused_head=None if kind == "sft" else False,
        )
    elif kind == "stock":
        trainer = _sequential(transformers.Trainer)(
            model=model,
            args=transformers.TrainingArguments(**common),
            train_dataset=rows,
            data_collator=collator,
            compute_loss_func=make_compute_loss_func(trie, BETA),
        )
    else:
        trainer = _sequential(IGDTrainer)(
            model=model,
            args=transformers.TrainingArguments(**common),
            train_dataset=rows,
            data_collator=collator,
            trie=trie,
            beta=BETA,
            normalize="tokens" if kind == "igd_tokens" else "weights",
        )
    if initial is not None:
        initial[kind] = trainable_params(model)
    trainer.train()
    assert trainer.state.global_step == STEPS
    return trainable_params(model)


def worker(out: Path) -> None:
    """The 2-process side: every configuration, each process saving its final parameters."""
    rank = int(os.environ.get("RANK", "0"))
    for name, (kind, batch, accumulation, average) in CONFIGS.items():
        params = train_params(kind, batch, accumulation, average, out / f"run-{name}")
        torch.save(params, out / f"{name}-rank{rank}.pt")


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_global_batch(tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    pytest.importorskip("datasets")

    out = tmp_path / "ddp"
    out.mkdir()
    env = subprocess_env(OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
        "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(Path(__file__).resolve()), str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]

    initial: dict[str, torch.Tensor] = {}
    for name, (kind, _, _, average) in CONFIGS.items():
        rank0 = torch.load(out / f"{name}-rank0.pt")
        rank1 = torch.load(out / f"{name}-rank1.pt")
        torch.testing.assert_close(rank0, rank1, atol=0, rtol=0, msg=f"{name}: ranks differ")
        single = train_params(kind, GLOBAL_BATCH, 1, average, tmp_path / f"single-{name}", initial)
        assert (single - initial[kind]).abs().max() > 1e-2, f"{name}: training did not move"
        if name in NOT_GLOBAL:
            assert (rank0 - single).abs().max() > 1e-3, name
        else:
            torch.testing.assert_close(rank0, single, atol=1e-5, rtol=0, msg=name)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
