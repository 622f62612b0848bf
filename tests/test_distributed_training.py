"""Data-parallel training gives the loss of the whole global batch.

Two CPU processes (``accelerate launch --config_file examples/configs/accelerate_ddp.yaml``:
torchrun + DDP over gloo, as the runs set ``use_cpu=True``) with per-device batches of 2 (or 1
with 2 accumulation steps) must end with the same parameters, to 1e-5, as one process with
batches of 4 over the same rows in the same order: plain SGD, float32, sequential sampling
(accelerate deals batch ``i`` to process ``i % 2``, so global step ``s`` holds rows
``4s .. 4s + 3`` in both runs; ``factories.training.parity_trainer``). Rows differ in length and
in IGD weight sum, so a loss normalised by each process's own ``Omega`` (or token count) moves
the parameters differently; the test shows that with the stock Trainer and
``average_tokens_across_devices=False``.

Run as a script (``python tests/test_distributed_training.py OUT_DIR`` under ``accelerate
launch``) this module is the worker: it trains every configuration and saves each process's
final parameters under ``OUT_DIR``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from factories.cli import ROOT, subprocess_env
from factories.training import PARITY_GLOBAL_BATCH, parity_trainer, trainable_params

NUM_ROWS, STEPS = 8, 2

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


def train_params(
    kind: str, batch: int, accumulation: int, average: bool, out: Path, initial: dict | None = None
) -> torch.Tensor:
    """Train one configuration; return its flattened trainable parameters after the run.

    ``initial``, when given, receives the parameters before training under ``kind``.
    """
    trainer = parity_trainer(kind, batch, accumulation, average, out, rows=NUM_ROWS)
    if initial is not None:
        initial[kind] = trainable_params(trainer.model)
    trainer.train()
    assert trainer.state.global_step == STEPS
    return trainable_params(trainer.model)


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
    config = ROOT / "examples" / "configs" / "accelerate_ddp.yaml"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
        "--num_processes", "2", "--num_machines", "1", "--dynamo_backend", "no",
        str(Path(__file__).resolve()), str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )
    # (a launch may abort at exit after finishing: the saved parameters are checked below)
    missing = [n for n in CONFIGS for r in (0, 1) if not (out / f"{n}-rank{r}.pt").exists()]
    assert not missing, f"exit status {proc.returncode}, missing {missing}:\n{proc.stderr[-4000:]}"

    initial: dict[str, torch.Tensor] = {}
    for name, (kind, _, _, average) in CONFIGS.items():
        rank0 = torch.load(out / f"{name}-rank0.pt")
        rank1 = torch.load(out / f"{name}-rank1.pt")
        torch.testing.assert_close(rank0, rank1, atol=0, rtol=0, msg=f"{name}: ranks differ")
        single = train_params(
            kind, PARITY_GLOBAL_BATCH, 1, average, tmp_path / f"single-{name}", initial
        )
        assert (single - initial[kind]).abs().max() > 1e-2, f"{name}: training did not move"
        if name in NOT_GLOBAL:
            assert (rank0 - single).abs().max() > 1e-3, name
        else:
            torch.testing.assert_close(rank0, single, atol=1e-5, rtol=0, msg=name)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
