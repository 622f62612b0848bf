"""The training side of the pipeline: tokenized examples, the collator, the loss and the
Trainer run.

Training uses :class:`igdbeam.training.trainer.IGDTrainer` when this igdbeam build has it, else
a plain ``Trainer`` with :func:`igdbeam.training.loss_func.make_compute_loss_func`; both are
imported lazily.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from igdbeam.data.bigrec_csv import Sample
from igdbeam.training.prompts import IGNORE_INDEX, build_example, get_template

LOSSES = ("plain", "pos", "cft", "igd")


class ExampleDataset(torch.utils.data.Dataset):
    """Tokenized training examples built with :func:`build_example`, tokenized on first access.

    Each item holds ``input_ids`` and ``labels`` (for :func:`pad_collate`) and the same tokens
    split as ``prompt_ids`` / ``completion_ids`` plus the history-free ``cf_prompt_ids`` (for
    ``igdbeam.CompletionCollator`` / ``igdbeam.CFTCollator``). A row is tokenized when it is first
    read and kept: a fine-tune of N steps over a large split tokenizes only the rows it draws,
    and a resumed one does not tokenize the whole split again before its first step.
    """

    def __init__(
        self,
        tokenizer: Any,
        samples: Sequence[Sample],
        template: str = "igd",
        max_prompt_tokens: int = 512,
        max_history_items: int | None = None,
        progress: bool = True,
    ) -> None:
        """Keep the samples; ``progress`` is accepted for compatibility (nothing runs here)."""
        self.tokenizer = tokenizer
        self.samples = list(samples)
        self.template = template
        self.max_prompt_tokens = max_prompt_tokens
        self.max_history_items = max_history_items
        self.cf_prompt = list(
            tokenizer(get_template(template).history_free_prompt(), add_special_tokens=False)[
                "input_ids"
            ]
        )
        self._cache: dict[int, dict[str, list[int]]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        i = range(len(self.samples))[i]  # negative indices and bounds as a list's
        cached = self._cache.get(i)
        if cached is None:
            cached = self._cache[i] = self._encode(self.samples[i])
        return cached

    @property
    def examples(self) -> list[dict[str, list[int]]]:
        """Every example, tokenizing the rows not read yet."""
        return [self[i] for i in range(len(self))]

    def _encode(self, s: Sample) -> dict[str, list[int]]:
        hist = list(s.history_item_title)
        if self.max_history_items is not None:
            hist = hist[-self.max_history_items :]
        ids, labels = build_example(
            self.tokenizer,
            hist,
            s.item_title,
            self.template,
            max_prompt_tokens=self.max_prompt_tokens,
        )
        n_prompt = sum(1 for x in labels if x == IGNORE_INDEX)
        return {
            "input_ids": ids,
            "labels": labels,
            "prompt_ids": ids[:n_prompt],
            "completion_ids": ids[n_prompt:],
            "cf_prompt_ids": self.cf_prompt,
        }


def pad_collate(pad_id: int) -> Callable[[list[dict[str, list[int]]]], dict[str, torch.Tensor]]:
    """A collator that right-pads ``input_ids`` (pad id), ``labels`` (-100) and builds the mask."""

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), int(pad_id), dtype=torch.int64)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.int64)
        mask = torch.zeros((len(batch), width), dtype=torch.int64)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return collate


TRAINER_LOSS = {"plain": "ce", "pos": "pos", "cft": "cft", "igd": "igd"}


def make_loss(trie: Any, loss: str, beta: float) -> Callable[..., torch.Tensor]:
    """The Trainer ``compute_loss_func`` for a loss name: plain, pos, cft or igd.

    Calls ``igdbeam.training.loss_func.make_compute_loss_func(trie, beta, loss=...)`` with the
    trainer's names (``plain`` is its ``"ce"``); a build whose function has no ``loss`` argument
    offers ``plain`` (``beta = 1``) and ``igd`` only.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    from igdbeam.training.loss_func import make_compute_loss_func

    if "loss" in inspect.signature(make_compute_loss_func).parameters:
        return make_compute_loss_func(trie, beta, loss=TRAINER_LOSS[loss])
    if loss in ("plain", "igd"):
        return make_compute_loss_func(trie, 1.0 if loss == "plain" else beta)
    raise NotImplementedError(
        f"loss {loss!r} needs igdbeam.training.loss_func.make_compute_loss_func to accept a loss "
        "mode; this build only offers the IG weighting (use --loss plain or --loss igd)"
    )


def _igd_trainer() -> tuple[Any, Any, Any] | None:
    """``(IGDTrainer, CompletionCollator, CFTCollator)`` when this igdbeam build has them."""
    try:
        from igdbeam.training.collators import CFTCollator, CompletionCollator
        from igdbeam.training.trainer import IGDTrainer
    except ImportError:
        return None
    return IGDTrainer, CompletionCollator, CFTCollator


def train_model(
    model: Any,
    tokenizer: Any,
    trie: Any,
    samples: Sequence[Sample],
    output_dir: str | Path,
    *,
    loss: str = "igd",
    beta: float = 0.1,
    template: str = "igd",
    epochs: float = 1.0,
    max_steps: int = -1,
    learning_rate: float = 1e-4,
    batch_size: int = 4,
    grad_accum: int = 1,
    max_prompt_tokens: int = 512,
    max_history_items: int | None = None,
    seed: int = 0,
    progress: bool = True,
    save: bool = True,
    lora: Any = None,
    eval_samples: Sequence[Sample] | None = None,
    eval_steps: int | None = None,
    warmup_steps: float = 0,
    dtype: str | torch.dtype | None = None,
    checkpoint_steps: int | None = None,
    early_stopping_patience: int | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` on the samples with a transformers ``Trainer`` and the chosen loss.

    With ``igdbeam.training.trainer.IGDTrainer`` available it trains with it (``loss``
    plain/pos/cft/igd map to its ``ce``/``pos``/``cft``/``igd``; CFT gets
    ``igdbeam.CFTCollator`` with the history-free prompt); otherwise a plain ``Trainer`` with
    :func:`make_loss`. The Trainer runs data-parallel when started with ``accelerate launch``.
    With ``save`` the model and tokenizer are written to ``output_dir`` (``save_model`` writes
    to a temp folder first only on the main process, so readers never see a half checkpoint).

    With ``lora`` (a ``peft.LoraConfig``, e.g. :func:`igdbeam.training.lora.lora_config`) the
    model is wrapped with ``peft.get_peft_model`` and only the adapter is trained and saved (a
    few MB). With ``eval_samples`` the Trainer evaluates on them every ``eval_steps`` steps (and at
    the end), logging ``eval_loss_zero_ig`` / ``eval_loss_pos_ig``: the training curves.

    ``dtype`` (``auto`` / ``float32`` / ``bfloat16``, see :mod:`igdbeam.precision`; None keeps
    the model as it is): with bfloat16 a LoRA fine-tune keeps the frozen base weights in
    bfloat16 and the adapter in float32 (peft's default), a full fine-tune keeps float32 master
    weights and runs under bfloat16 autocast (``TrainingArguments(bf16=True)``).

    With ``checkpoint_steps`` the Trainer writes a checkpoint (model or adapter, optimizer,
    scheduler, RNG states, log) to ``output_dir/checkpoint-<step>`` every N optimizer steps,
    keeping the newest, and a later call with the same ``output_dir`` resumes from it: a stopped
    fine-tune continues where it stopped, with the same data order and the same log.

    With ``early_stopping_patience`` (and ``eval_samples``) the Trainer evaluates and writes a
    checkpoint at the end of every epoch, stops after that many epochs without a lower
    validation loss, and ends with the best epoch's weights (``load_best_model_at_end``), as the
    IGD authors' training script does; a stopped run resumes from the newest epoch checkpoint.

    Returns:
        the Trainer's training metrics plus ``seconds`` and ``log_history`` (every logged
        training and evaluation record).
    """
    from transformers import Trainer, TrainingArguments

    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    data = ExampleDataset(
        tokenizer, samples, template, max_prompt_tokens, max_history_items, progress
    )
    eval_data = None
    if eval_samples:
        eval_data = ExampleDataset(
            tokenizer, eval_samples, template, max_prompt_tokens, max_history_items, False
        )
    autocast_bf16 = False
    if dtype is not None:
        from igdbeam.precision import resolve_dtype

        target = resolve_dtype(dtype, next(model.parameters()).device)
        if target == torch.bfloat16 and lora is None:
            model = model.float()  # float32 master weights, bfloat16 autocast
            autocast_bf16 = True
        elif model.dtype != target:
            model = model.to(target)
    if lora is not None:
        import peft

        model = peft.get_peft_model(model, lora)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    early = early_stopping_patience is not None
    if early and eval_data is None:
        raise ValueError("early_stopping_patience needs eval_samples (a validation split)")
    args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        logging_steps=min(10, eval_steps) if eval_steps else 10,
        eval_strategy="epoch" if early else "steps" if eval_data is not None else "no",
        eval_steps=eval_steps if eval_data is not None and not early else None,
        per_device_eval_batch_size=batch_size,
        warmup_steps=warmup_steps,
        save_strategy="epoch" if early else "steps" if checkpoint_steps else "no",
        save_steps=checkpoint_steps if checkpoint_steps else 500,
        save_total_limit=1 if checkpoint_steps or early else None,
        load_best_model_at_end=early,
        metric_for_best_model="eval_loss" if early else None,
        bf16=autocast_bf16,
        report_to=[],
        seed=seed,
        disable_tqdm=not progress,
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
    )
    igd = _igd_trainer()
    if igd is not None:
        igd_trainer, completion_collator, cft_collator = igd
        collator = (cft_collator if loss == "cft" else completion_collator)(pad_id)
        trainer = igd_trainer(
            model=model,
            args=args,
            train_dataset=data,
            eval_dataset=eval_data,
            data_collator=collator,
            trie=trie,
            beta=beta,
            loss=TRAINER_LOSS[loss],
        )
    else:
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=data,
            data_collator=pad_collate(pad_id),
            compute_loss_func=make_loss(trie, loss, beta),
        )
    start = time.perf_counter()
    if early_stopping_patience is not None:
        from transformers import EarlyStoppingCallback

        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=early_stopping_patience))
    resume = _latest_checkpoint(Path(output_dir)) if checkpoint_steps or early else None
    history = _initial_eval(trainer, Path(output_dir), eval_data is not None, resume)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if eval_data is not None and trainer.state.global_step % (eval_steps or 1) != 0:
        trainer.evaluate()
    metrics = dict(result.metrics)
    metrics["seconds"] = time.perf_counter() - start
    metrics["resumed_from"] = None if resume is None else resume.name
    metrics["dtype"] = str(next(trainer.model.parameters()).dtype).removeprefix("torch.")
    metrics["bf16_autocast"] = autocast_bf16
    metrics["log_history"] = history + list(trainer.state.log_history)
    if save:
        from igdbeam.io import atomic_dir, ensure_output_dir

        out = Path(output_dir)
        if trainer.is_world_process_zero():
            ensure_output_dir(out, "train")  # a new or empty folder gets igdbeam's marker
            # Saved into a unique temp folder inside ``out`` (concurrent runs never share one),
            # fsynced and renamed to ``out/model``; an earlier model is replaced only then.
            with atomic_dir(
                out / "model", command="train", overwrite=True, require_marker=False
            ) as tmp:
                trainer.save_model(str(tmp))
                tokenizer.save_pretrained(str(tmp))
        trainer.accelerator.wait_for_everyone()
        metrics["model_dir"] = str(Path(output_dir) / "model")
    return metrics


STEP0_EVAL = "eval_step0.json"


def _latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete ``checkpoint-<step>`` folder of a Trainer run (None: none yet).

    A checkpoint counts once its ``trainer_state.json`` exists (the Trainer writes it last), so
    a folder left half-written by a killed run is skipped.
    """
    if not folder.is_dir():
        return None
    done = [
        p
        for p in folder.glob("checkpoint-*")
        if p.name.split("-", 1)[1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(done, key=lambda p: int(p.name.split("-", 1)[1]), default=None)


def _initial_eval(
    trainer: Any, folder: Path, evaluate: bool, resume: Path | None
) -> list[dict[str, Any]]:
    """The curves' first point, the model before training (``train()`` starts a new log).

    Written to ``folder/eval_step0.json`` so that a resumed run keeps it without evaluating the
    base model again.
    """
    if not evaluate:
        return []
    path = folder / STEP0_EVAL
    if resume is not None and path.is_file():
        return [json.loads(path.read_text())]
    record = {**trainer.evaluate(), "step": 0}
    if trainer.is_world_process_zero():
        from igdbeam.io import write_json

        folder.mkdir(parents=True, exist_ok=True)
        write_json(path, record)
    return [record]
