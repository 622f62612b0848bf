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


# ---------------------------------------------------------------- data-parallel parity runs
# One configuration trained by one process over the global batch and by two processes (DDP,
# DeepSpeed ZeRO, FSDP2) must end with the same parameters: plain SGD at lr 1, float32, a
# sequential sampler (accelerate deals batch i to process i % 2, so every optimizer step holds
# the same rows in both runs), rows whose prompts, completions and IGD weight sums differ.

PARITY_BETA = 0.1
PARITY_GLOBAL_BATCH = 4
PARITY_ITEMS = [
    [3, 4, 10, EOS],
    [3, 4, 11, 12, EOS],
    [3, 4, 11, 13, EOS],
    [5, 14, EOS],
    [5, 15, 16, 17, 18, EOS],
    [6, 7, 8, 19, EOS],
    [9, 20, EOS],
]
PARITY_WEIGHTS = [4, 2, 1, 3, 1, 2, 1]
_PARITY_TARGETS = [0, 4, 6, 1, 3, 5, 2, 4, 6, 0, 5, 1]

# trainer kinds of parity_trainer: IGDTrainer (weight / token normalisation, LoRA), a stock
# Trainer with make_compute_loss_func, IGDSFTTrainer (TRL's choice of head / full logits), and
# the negative control "igd_ga_divided": IGDTrainer telling transformers that its loss is not
# scaled for gradient accumulation, so that the Trainer divides it by the accumulation steps
# once more (the bug of a per-micro-batch normalisation): it must NOT match with accumulation.
PARITY_KINDS = ("igd", "igd_tokens", "igd_lora", "stock", "sft", "sft_logits", "igd_ga_divided")


def parity_rows(n: int = 8) -> list[dict[str, list[int]]]:
    """``n`` (at most 12) rows of different prompt lengths and targets: each process's share of
    a step has its own token count and IGD weight sum."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        k = _PARITY_TARGETS[i]
        history = [rng.randrange(30, 40) for _ in range(1 + (i * 3) % 5)]
        rows.append({"prompt_ids": [BOS, *history, 40 + k], "completion_ids": PARITY_ITEMS[k]})
    return rows


def sequential(cls: type) -> type:
    """``cls`` (a Trainer class) with a sequential training sampler (the same row order in every
    run)."""

    class Sequential(cls):  # type: ignore[misc, valid-type]
        def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
            data = args[0] if args and args[0] is not None else self.train_dataset
            return torch.utils.data.SequentialSampler(data)

    Sequential.__name__ = cls.__name__
    return Sequential


def parity_trainer(
    kind: str, batch: int, accumulation: int, average: bool, out: Path, *, rows: int, **extra: Any
) -> Any:
    """A Trainer of ``kind`` (:data:`PARITY_KINDS`) over :func:`parity_rows`: per-device batch
    ``batch``, ``accumulation`` steps, ``average_tokens_across_devices=average``, one epoch of
    ``rows`` rows; ``extra`` goes to the training arguments. The model is
    :func:`training_llama` (hidden 16, 1 layer), LoRA r=2 for ``"igd_lora"``."""
    import transformers

    from factories.ids import PAD
    from factories.models import word_tokenizer
    from igdbeam import CompletionCollator, IGDTrainer, ItemTrie, make_compute_loss_func

    if kind not in PARITY_KINDS:
        raise ValueError(f"kind must be one of {PARITY_KINDS}, got {kind!r}")
    trie = ItemTrie.from_token_ids(PARITY_ITEMS, weights=PARITY_WEIGHTS, vocab_size=VOCAB)
    common = run_kwargs(
        out,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=-1,
        num_train_epochs=1,
        learning_rate=1.0,
        average_tokens_across_devices=average,
        **EXACT_SGD,
    )
    common.update(extra)
    data = parity_rows(rows)
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
        return sequential(IGDSFTTrainer)(
            model=model,
            args=args,
            train_dataset=datasets.Dataset.from_list(data),
            processing_class=word_tokenizer(VOCAB),
            data_collator=collator,
            trie=trie,
            beta=PARITY_BETA,
            fused_head=None if kind == "sft" else False,
        )
    if kind == "stock":
        return sequential(transformers.Trainer)(
            model=model,
            args=transformers.TrainingArguments(**common),
            train_dataset=data,
            data_collator=collator,
            compute_loss_func=make_compute_loss_func(trie, PARITY_BETA),
        )
    cls = IGDTrainer
    if kind == "igd_ga_divided":
        cls = type("IGDTrainer", (IGDTrainer,), {"loss_is_scaled_for_ga": False})
    return sequential(cls)(
        model=model,
        args=transformers.TrainingArguments(**common),
        train_dataset=data,
        data_collator=collator,
        trie=trie,
        beta=PARITY_BETA,
        normalize="tokens" if kind == "igd_tokens" else "weights",
    )


def trainable_params(model: torch.nn.Module) -> torch.Tensor:
    """The trainable parameters, flattened into one float32 vector (a copy)."""
    return torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad]).clone()


def engine_facts(trainer: Any) -> dict[str, Any]:
    """What really ran the model after ``trainer.train()``: the distributed type and process
    count, the DeepSpeed engine (ZeRO stage, optimizer, parameters partitioned by ZeRO-3), the
    FSDP2 modules and the parameters sharded as DTensors, and IGDSFTTrainer's head."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor, Shard

    acc = trainer.accelerator
    model = trainer.model_wrapped
    facts: dict[str, Any] = {
        "distributed_type": str(acc.distributed_type).rsplit(".", 1)[-1],
        "num_processes": acc.num_processes,
        "global_step": trainer.state.global_step,
        "fused_head": getattr(trainer, "igd_fused_head", None),
        "deepspeed_engine": False,
    }
    try:
        import deepspeed
    except ImportError:
        deepspeed = None
    if deepspeed is not None and isinstance(model, deepspeed.DeepSpeedEngine):
        params = list(model.module.parameters())
        facts.update(
            deepspeed_engine=True,
            zero_stage=model.zero_optimization_stage(),
            zero_optimizer=type(model.optimizer).__name__,
            gradient_accumulation_steps=model.gradient_accumulation_steps(),
            zero3_partitioned=sum(
                getattr(p, "ds_tensor", None) is not None and p.ds_tensor.numel() < p.ds_numel
                for p in params
            ),
            num_params=len(params),
        )
    params = list(trainer.model.parameters())
    facts.update(
        fsdp_modules=sum(isinstance(m, FSDPModule) for m in trainer.model.modules()),
        dtensor_sharded=sum(
            isinstance(p, DTensor)
            and all(isinstance(s, Shard) for s in p.placements)
            and p.to_local().numel() < p.numel()
            for p in params
        ),
        num_params=facts.get("num_params", len(params)),
    )
    return facts


def force_fsdp_on_cpu() -> None:
    """Make accelerate run FSDP on CPU processes (gloo), as it does on GPUs.

    accelerate turns an FSDP configuration into ``DistributedType.FSDP`` only for GPU-type
    processes (``AcceleratorState.__init__`` in accelerate/state.py: the FSDP branch is under
    ``distributed_type in [MULTI_GPU, MULTI_XPU, ...]``); a CPU process (``MULTI_CPU``) then
    trains with DDP and ignores the plugin. This wraps ``AcceleratorState.__init__`` so that a
    ``MULTI_CPU`` state given an FSDP plugin takes the branch's two assignments (FSDP type and
    plugin); everything after it (``fully_shard``, the Trainer's FSDP paths) is accelerate's own.
    """
    import accelerate.state as state
    from accelerate.utils import DistributedType

    if getattr(state.AcceleratorState.__init__, "_igd_cpu_fsdp", False):
        return
    original = state.AcceleratorState.__init__

    def patched_init(self: Any, *args: Any, fsdp_plugin: Any = None, **kwargs: Any) -> None:
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    patched_init._igd_cpu_fsdp = True  # type: ignore[attr-defined]
    state.AcceleratorState.__init__ = patched_init  # type: ignore[method-assign]


# name -> (trainer kind, per-device batch, accumulation steps, average_tokens_across_devices)
ParityConfigs = dict[str, tuple[str, int, int, bool]]

# The distributed-parity grid both engines' tests run (DeepSpeed ZeRO and FSDP2), in the
# ParityConfigs layout above, and the training rows of each run.
PARITY_ROWS = 12
PARITY_CONFIGS: ParityConfigs = {
    "igd": ("igd", 2, 1, True),
    "igd_ga2": ("igd", 1, 2, False),
    "igd_lora": ("igd_lora", 2, 1, True),
    "igd_lora_ga2": ("igd_lora", 1, 2, True),
    "sft": ("sft", 2, 1, True),
    "sft_ga2": ("sft", 1, 2, True),
    "sft_logits_ga2": ("sft_logits", 1, 2, False),
    "stock": ("stock", 2, 1, True),
    "stock_ga2": ("stock", 1, 2, True),
    "igd_ga2_divided": ("igd_ga_divided", 1, 2, True),  # the negative control
}


def parity_worker(out: Path, configs: ParityConfigs, rows: int) -> None:
    """The multi-process side: train every configuration, save it with ``trainer.save_model``
    (``out/<name>``, written by rank 0), record :func:`engine_facts` per rank, and finally write
    ``done-rank<r>.json`` (a launch may still crash at exit: the saved results are the truth)."""
    import gc
    import json
    import os

    rank = int(os.environ.get("RANK", "0"))
    for name, (kind, batch, accumulation, average) in configs.items():
        trainer = parity_trainer(kind, batch, accumulation, average, out / f"run-{name}", rows=rows)
        trainer.train()
        trainer.save_model(str(out / name))
        facts = engine_facts(trainer)
        (out / f"facts-{name}-rank{rank}.json").write_text(json.dumps(facts))
        trainer.accelerator.free_memory()
        del trainer
        gc.collect()
    (out / f"done-rank{rank}.json").write_text(json.dumps({"configs": list(configs)}))


def launch_parity_workers(script: Path, config: Path, out: Path, timeout: float = 600) -> int:
    """``accelerate launch --config_file config --num_processes 2 script out`` from the repository
    root; return its exit status once both ranks have finished (an abort at exit after finishing
    is tolerated: the caller checks the saved results). Fails with the log tail otherwise."""
    import subprocess
    import sys

    from factories.cli import ROOT, subprocess_env

    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
        "--num_processes", "2", "--num_machines", "1", "--machine_rank", "0",
        str(script), str(out),
    ]  # fmt: skip
    env = subprocess_env(OMP_NUM_THREADS="1")
    proc = subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    finished = all((out / f"done-rank{r}.json").exists() for r in (0, 1))
    assert finished, f"exit status {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.returncode


def saved_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors files ``trainer.save_model`` wrote (model or adapter)."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no safetensors file in {folder}: {sorted(p.name for p in folder.iterdir())}"
    return {k: v for f in files for k, v in load_file(f).items()}


def reference_weights(kind: str, out: Path, rows: int) -> dict[str, torch.Tensor]:
    """The 1-process run of ``kind`` over the global batch (batch 4, no accumulation), saved like
    the workers' and read back; asserts that training moved the trainable parameters."""
    trainer = parity_trainer(kind, PARITY_GLOBAL_BATCH, 1, True, out / f"run-{kind}", rows=rows)
    before = trainable_params(trainer.model)
    trainer.train()
    assert trainer.state.global_step == rows // PARITY_GLOBAL_BATCH
    assert (trainable_params(trainer.model) - before).abs().max() > 1e-2, f"{kind} did not move"
    trainer.save_model(str(out / kind))
    return saved_weights(out / kind)


def assert_same_weights(
    got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], name: str, atol: float = 1e-5
) -> None:
    """The same tensor names, every tensor equal to ``atol``."""
    assert sorted(got) == sorted(want), f"{name}: {sorted(set(got) ^ set(want))}"
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=atol, rtol=0, msg=f"{name}: {key}")


# negative-control kind -> the kind whose 1-process weights it must NOT reach
NEGATIVE_CONTROLS = {"igd_ga_divided": "igd"}


def reference_kinds(configs: ParityConfigs) -> list[str]:
    """The trainer kinds whose 1-process weights ``configs`` are compared with."""
    return sorted({NEGATIVE_CONTROLS.get(kind, kind) for kind, *_ in configs.values()})


def assert_parity(
    got: dict[str, torch.Tensor],
    references: dict[str, dict[str, torch.Tensor]],
    kind: str,
    name: str,
) -> None:
    """``got`` equals the 1-process weights of ``kind`` to 1e-5; a negative control must differ
    from those of the kind it imitates by more than 1e-3."""
    if kind in NEGATIVE_CONTROLS:
        want = references[NEGATIVE_CONTROLS[kind]]
        diff = max(float((got[k] - want[k]).abs().max()) for k in want)
        assert diff > 1e-3, f"{name}: the negative control matched the reference ({diff:.2e})"
    else:
        assert_same_weights(got, references[kind], name)
