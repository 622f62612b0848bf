"""The training side of the pipeline: tokenized examples, the collator, the loss and the
Trainer run.

Training uses :class:`igdbeam.training.trainer.IGDTrainer` when this igdbeam build has it, else
a plain ``Trainer`` with :func:`igdbeam.training.loss_func.make_compute_loss_func`; both are
imported lazily.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from igdbeam.data.bigrec_csv import Sample
from igdbeam.training.prompts import IGNORE_INDEX, build_example, get_template

LOSSES = ("plain", "pos", "cft", "igd")


class ExampleDataset(torch.utils.data.Dataset):
    """Tokenized training examples built with :func:`build_example`.

    Each item holds ``input_ids`` and ``labels`` (for :func:`pad_collate`) and the same tokens
    split as ``prompt_ids`` / ``completion_ids`` plus the history-free ``cf_prompt_ids`` (for
    ``igdbeam.CompletionCollator`` / ``igdbeam.CFTCollator``).
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
        """Tokenize every sample once (the labels are the target's trie path)."""
        self.examples = []
        cf_prompt = list(
            tokenizer(get_template(template).history_free_prompt(), add_special_tokens=False)[
                "input_ids"
            ]
        )
        for s in tqdm(samples, desc="tokenizing examples", disable=not progress, unit="row"):
            hist = list(s.history_item_title)
            if max_history_items is not None:
                hist = hist[-max_history_items:]
            ids, labels = build_example(
                tokenizer,
                hist,
                s.item_title,
                template,
                max_prompt_tokens=max_prompt_tokens,
            )
            n_prompt = sum(1 for x in labels if x == IGNORE_INDEX)
            self.examples.append(
                {
                    "input_ids": ids,
                    "labels": labels,
                    "prompt_ids": ids[:n_prompt],
                    "completion_ids": ids[n_prompt:],
                    "cf_prompt_ids": cf_prompt,
                }
            )

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.examples[i]


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
    if lora is not None:
        import peft

        model = peft.get_peft_model(model, lora)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        logging_steps=min(10, eval_steps) if eval_steps else 10,
        eval_strategy="steps" if eval_data is not None else "no",
        eval_steps=eval_steps if eval_data is not None else None,
        per_device_eval_batch_size=batch_size,
        warmup_steps=warmup_steps,
        save_strategy="no",
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
    history: list[dict[str, Any]] = []
    if eval_data is not None:
        # The curves' first point, the model before training (train() starts a new log).
        history.append({**trainer.evaluate(), "step": 0})
    result = trainer.train()
    if eval_data is not None and trainer.state.global_step % (eval_steps or 1) != 0:
        trainer.evaluate()
    metrics = dict(result.metrics)
    metrics["seconds"] = time.perf_counter() - start
    metrics["log_history"] = history + list(trainer.state.log_history)
    if save:
        from igdbeam.app.io_utils import atomic_dir, ensure_output_dir

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
