"""``igdbeam stats``: dataset and trie statistics, including the zero-IG token share."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from igdbeam.app.cli import loading
from igdbeam.app.cli.formatting import HelpFormatter
from igdbeam.app.cli.options import add_data_args, add_overwrite
from igdbeam.app.cli.out_checks import check_out_file
from igdbeam.app.cli.plots import PlotError, try_plot


def add_parser(sub: Any) -> None:
    """Register ``igdbeam stats`` on the CLI's subparsers."""
    p = sub.add_parser(
        "stats",
        help="dataset and trie statistics, including the zero-IG token share",
        description="Print split sizes, history lengths and the trie's statistics (the paper's "
        "Table 4 zero-IG token share); optionally save them as JSON and plot the zero-IG share "
        "by decoding step.",
        formatter_class=HelpFormatter,
    )
    add_data_args(p)
    p.add_argument("--model", default="smollm2", help="tokenizer source: 'smollm2' or a folder")
    p.add_argument("--out", type=Path, default=None, help="write the statistics as JSON here")
    p.add_argument("--plot", type=Path, default=None, help="write zero_ig_by_step.png here")
    add_overwrite(p, "--out file or --plot image")


def cmd_stats(args: argparse.Namespace) -> int:
    """Print dataset and trie statistics."""
    import numpy as np

    from igdbeam.app.pipeline import build_trie
    from igdbeam.data import load_dataset
    from igdbeam.evaluation.analysis import plot_zero_ig_by_step, zero_ig_report
    from igdbeam.io import write_json

    plot = Path(args.plot) / "zero_ig_by_step.png" if args.plot is not None else None
    if args.out is not None:
        check_out_file(args.out, args.overwrite)
    if plot is not None:
        check_out_file(plot, args.overwrite, "--plot")
    ds = load_dataset(loading.dataset_dir(args))
    trie = build_trie(
        ds,
        loading.tokenizer(args.model),
        args.template,
        weighting=args.weighting,
        entropy=args.entropy,
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
    if plot is not None:
        failures: list[str] = []
        if not try_plot(failures, plot_zero_ig_by_step, plot, report):
            done = "the statistics are printed above"
            if args.out is not None:
                done += f" and written to {str(args.out)!r}"
            raise PlotError(done, failures)
    return 0
