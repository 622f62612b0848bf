"""``igdbeam prepare``: build a MovieLens dataset in the BIGRec CSV format."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from igdbeam.app.cli.arg_types import finite_float, positive_int
from igdbeam.app.cli.formatting import HelpFormatter
from igdbeam.app.cli.options import add_overwrite
from igdbeam.app.cli.out_checks import check_out_dir


def add_parser(sub: Any) -> None:
    """Register ``igdbeam prepare`` on the CLI's subparsers."""
    p = sub.add_parser(
        "prepare",
        help="build a MovieLens dataset in the BIGRec CSV format",
        description="Build info.txt and train/valid/test.csv from the RecBole MovieLens files: "
        "each user's items sorted by time, one sample per position with up to --max-history "
        "previous items, all samples split 80/10/10 by the target's timestamp.",
        formatter_class=HelpFormatter,
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
    add_overwrite(p, "--out folder")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")


def cmd_prepare(args: argparse.Namespace) -> int:
    """Build a MovieLens dataset folder."""
    from igdbeam.app.assets import asset_path
    from igdbeam.data import build_movielens

    check_out_dir(args.out, "prepare", args.overwrite)
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
