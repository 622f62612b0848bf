"""``igdbeam experiment``: its options and the command (the train x decode grid, resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from igdbeam.app.cli.arg_types import (
    non_negative_float,
    non_negative_int,
    positive_int,
    seed_list,
    unit_float,
)

DESCRIPTION = """\
Run the paper's comparison as one resumable command: fine-tune with each training loss
(plain = the BIGRec/D3 cross-entropy baseline, pos, cft, igd) and seed, decode the same test rows
with BIGRec (length penalty 1), D3 (length penalty 0) and D3 + IGD (alpha), and report
NDCG/HR@{5,10}, coverage, first-token concentration and popularity with 95% bootstrap intervals
clustered by user, paired differences against the D3 baseline (plain loss, D3 decoding) and the
popularity and SASRec baselines on the same rows; the Table 2 ablation is part of the grid.
Every model (LoRA adapters by default) and every decoded chunk is cached in --out, so a stopped
run resumes where it stopped; several processes on the same --out (e.g. one per core with
--threads 1) share the work: a fine-tune is trained once, and the decoded chunks are split
between them. Profiles: 'cpu' (2 CPU cores, about 1.5-2 hours for the whole grid), 'cpu-large'
(the whole ML-100k training and test splits on CPU, several hours: spans sessions), 'gpu' (the
authors' protocol: whole training split, every test row, full fine-tune), 'tiny' (a few steps,
for CI with a tiny model)"""


def add_parser(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """Register ``igdbeam experiment`` on the CLI's subparsers."""
    p = sub.add_parser(
        "experiment",
        help="train x decode grid with intervals (resumable): does IGD help this recommender?",
        description=DESCRIPTION,
        formatter_class=formatter,
    )
    p.add_argument(
        "--profile", choices=("cpu", "cpu-large", "gpu", "tiny"), default="cpu", help="sizes"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder and cache")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", type=Path, help="a BIGRec-format folder (default: --dataset)")
    src.add_argument("--dataset", choices=("ml-100k", "ml-1m"), default="ml-100k", help="data")
    p.add_argument("--model", default="smollm2", help="base model: 'smollm2' or a folder")
    p.add_argument(
        "--losses", default=None, help="comma-separated subset of plain,pos,cft,igd (profile's)"
    )
    p.add_argument(
        "--seeds",
        type=seed_list,
        default=None,
        help="comma-separated training seeds >= 0 (profile's)",
    )
    p.add_argument("--beta", type=unit_float, default=None, help="IGD loss beta (profile: 0.1)")
    p.add_argument(
        "--alpha", type=unit_float, default=None, help="IGD decoding alpha (profile: 0.2)"
    )
    p.add_argument(
        "--catalog",
        choices=("all", "train-targets"),
        default=None,
        help="trie scope (profile: train-targets, the reference code's)",
    )
    p.add_argument(
        "--smoothing",
        type=non_negative_float,
        default=None,
        help="added to popularity counts (scope's)",
    )
    p.add_argument(
        "--train-steps", type=positive_int, default=None, help="optimizer steps per fine-tune"
    )
    p.add_argument("--train-rows", type=positive_int, default=None, help="latest N training rows")
    p.add_argument(
        "--test-rows",
        type=positive_int,
        default=None,
        help="test rows to decode, in a seeded random order (every user's last row first), so "
        "--report-only can report the rows decoded so far (default: profile's; cpu-large: all, "
        "in the split's order)",
    )
    p.add_argument(
        "--decode-chunk", type=positive_int, default=None, help="test rows per cached chunk"
    )
    p.add_argument(
        "--models-from",
        type=Path,
        default=None,
        help="another experiment folder: decode its finished fine-tunes instead of training "
        "(same training settings; e.g. to decode them in another --dtype or with another "
        "--alpha)",
    )
    p.add_argument(
        "--lora-r", type=non_negative_int, default=None, help="LoRA rank (0: full fine-tune)"
    )
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16"),
        default=None,
        help="precision of training and decoding; auto: bfloat16 where the CPU/GPU runs it "
        "natively (profile's when omitted; recorded resolved, so a resume keeps it)",
    )
    p.add_argument(
        "--exclude-history",
        action="store_true",
        help="never recommend an item of the row's own history (a per-row item filter)",
    )
    only = p.add_mutually_exclusive_group()
    only.add_argument(
        "--report-only",
        action="store_true",
        help="train and decode nothing: report the runs finished so far (a partial grid)",
    )
    only.add_argument(
        "--baselines-only",
        action="store_true",
        help="train no LLM: train SASRec on the training split and cache its lists for the "
        "test rows in OUT/baselines/, where the report reads them (needs "
        "'igdbeam[baselines]', whose RecTools wants numpy<2: run it in its own environment)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _csv_list(text: str | None, cast: type) -> tuple[Any, ...] | None:
    """A comma-separated option as a tuple of ``cast`` values (None stays None)."""
    if text is None:
        return None
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ValueError(f"empty list {text!r}")
    try:
        return tuple(cast(x) for x in items)
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a list of {cast.__name__}") from None


def cmd_experiment(args: argparse.Namespace) -> int:
    """Run or resume an experiment and print its Markdown tables."""
    import torch

    from igdbeam.app.experiment import PROFILES, Experiment, ExperimentProfile

    out = Path(args.out)
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / "experiment.json").exists())
    ):
        raise ValueError(
            f"--out {str(out)!r} exists and is not an igdbeam experiment folder; "
            "choose a new folder (an experiment folder is resumed)"
        )
    if args.lora_r is not None and args.lora_r < 0:
        raise ValueError(f"--lora-r must be >= 0, got {args.lora_r}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from igdbeam.precision import dtype_name, resolve_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"
    fields = {
        "losses": _csv_list(args.losses, str),
        "seeds": args.seeds,
        "beta": args.beta,
        "alpha": args.alpha,
        "catalog": args.catalog,
        "smoothing": args.smoothing,
        "train_steps": args.train_steps,
        "train_rows": args.train_rows,
        "test_rows": args.test_rows,
        "decode_chunk": args.decode_chunk,
        "lora_r": args.lora_r,
        "exclude_history": True if args.exclude_history else None,
        "dtype": None if args.dtype is None else dtype_name(resolve_dtype(args.dtype, device)),
    }
    base = PROFILES[args.profile]
    profile = ExperimentProfile(
        **{**base.__dict__, **{k: v for k, v in fields.items() if v is not None}}
    )
    exp = Experiment(
        args.out,
        profile,
        data_dir=args.data,
        dataset=args.dataset,
        model=args.model,
        progress=not args.no_progress,
        models_from=args.models_from,
    )
    if args.baselines_only:
        info = exp.cache_baselines()
        print(f"SASRec: {info['note']}")
        print(f"lists in {info['cache_file']}")
        return 0
    exp.report() if args.report_only else exp.run()
    print((Path(args.out) / "results.md").read_text())
    print(f"results in {args.out}/ (results.json, results.csv, results.md, training_curves.png)")
    return 0
