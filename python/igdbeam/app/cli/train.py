"""``igdbeam train``: fine-tune a causal LM on history -> next title."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from igdbeam.app.cli import loading
from igdbeam.app.cli.arg_types import (
    non_negative_int,
    positive_float,
    positive_int,
    steps_int,
    unit_float,
)
from igdbeam.app.cli.formatting import HelpFormatter
from igdbeam.app.cli.options import add_data_args, add_model_args, add_overwrite
from igdbeam.app.cli.out_checks import check_out_dir


def add_parser(sub: Any) -> None:
    """Register ``igdbeam train`` on the CLI's subparsers."""
    p = sub.add_parser(
        "train",
        help="fine-tune a causal LM on history -> next title (plain, Pos, CFT or IGD loss)",
        description="Fine-tune with a transformers Trainer. The labels of each example are the "
        "target title's trie path; the loss is 'plain' cross-entropy, 'igd' (zero-IG tokens "
        "weighted by --beta), or the 'pos' / 'cft' baselines when the installed trainer offers "
        "them. Run under 'accelerate launch' for data-parallel training.",
        formatter_class=HelpFormatter,
    )
    add_data_args(p)
    add_model_args(p)
    t = p.add_argument_group("training")
    t.add_argument("--output-dir", type=Path, required=True, help="checkpoint goes to DIR/model")
    t.add_argument("--loss", choices=("plain", "pos", "cft", "igd"), default="igd", help="loss")
    t.add_argument("--beta", type=unit_float, default=0.1, help="IGD weight of zero-IG tokens")
    t.add_argument("--epochs", type=positive_float, default=1.0, help="training epochs")
    t.add_argument(
        "--max-steps", type=steps_int, default=-1, help="stop after N steps (-1: epochs)"
    )
    t.add_argument("--lr", type=positive_float, default=1e-4, help="learning rate")
    t.add_argument("--batch-size", type=positive_int, default=4, help="per-process batch size")
    t.add_argument("--grad-accum", type=positive_int, default=1, help="gradient accumulation steps")
    t.add_argument(
        "--max-train-samples", type=positive_int, default=None, help="use the latest N rows"
    )
    t.add_argument("--seed", type=non_negative_int, default=0, help="training seed")
    t.add_argument(
        "--lora-r",
        type=non_negative_int,
        default=0,
        help="LoRA rank; 0 fine-tunes every weight (LoRA needs peft)",
    )
    t.add_argument(
        "--lora-alpha", type=positive_float, default=None, help="LoRA alpha (default 2 * r)"
    )
    t.add_argument("--lora-dropout", type=unit_float, default=0.05, help="LoRA dropout")
    t.add_argument(
        "--lora-target-modules",
        default=None,
        help="comma-separated module names (default: q,k,v,o,gate,up,down projections)",
    )
    add_overwrite(t, "--output-dir (its model/ and train_metrics.json)")


def _lora_config(args: argparse.Namespace) -> Any:
    """The ``peft.LoraConfig`` of ``train --lora-r R`` (None for a full fine-tune)."""
    if args.lora_r == 0:
        return None
    from igdbeam.training.lora import lora_config

    modules = None
    if args.lora_target_modules:
        modules = [m.strip() for m in args.lora_target_modules.split(",") if m.strip()]
    return lora_config(args.lora_r, args.lora_alpha, args.lora_dropout, modules)


def cmd_train(args: argparse.Namespace) -> int:
    """Fine-tune a model."""
    from igdbeam.app.pipeline import train_model
    from igdbeam.io import write_json

    check_out_dir(args.output_dir, "train", args.overwrite, "--output-dir")
    # Loaded in float32; train_model applies --dtype (bf16 base + float32 LoRA adapters, or
    # float32 master weights under bf16 autocast for a full fine-tune).
    ds, model, tok, trie = loading.setup(args, ("train",), dtype="float32")
    rows = ds.split("train")
    if args.max_train_samples is not None:
        rows = rows[-args.max_train_samples :]
    model.train()
    metrics = train_model(
        model,
        tok,
        trie,
        rows,
        args.output_dir,
        loss=args.loss,
        beta=args.beta,
        template=args.template,
        epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_prompt_tokens=args.max_prompt_tokens,
        max_history_items=args.max_history_items,
        seed=args.seed,
        progress=not args.no_progress,
        lora=_lora_config(args),
        dtype=args.dtype,
    )
    from igdbeam.app.pipeline import dist_state

    if dist_state().is_main_process:
        write_json(
            Path(args.output_dir) / "train_metrics.json",
            {"loss": args.loss, "beta": args.beta, **metrics},
        )
        print(f"trained with the {args.loss} loss: {metrics}")
    return 0
