"""``igdbeam recommend`` (top-K recommendations as CSV + JSON) and ``igdbeam evaluate`` (metrics
and entropy plots for one or more decoders)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from igdbeam.app.cli import loading
from igdbeam.app.cli.arg_types import positive_int
from igdbeam.app.cli.formatting import HelpFormatter
from igdbeam.app.cli.options import add_data_args, add_decode_args, add_model_args, add_overwrite
from igdbeam.app.cli.out_checks import check_out_dir, check_out_file
from igdbeam.app.cli.plots import PlotError, try_plot


def add_parsers(sub: Any) -> None:
    """Register ``igdbeam recommend`` and ``igdbeam evaluate`` on the CLI's subparsers."""
    p = sub.add_parser(
        "recommend",
        help="top-K recommendations for the rows of a split (CSV + JSON)",
        description="Decode the top --num-beams items per row with trie-constrained beam search "
        "and write one CSV row per recommendation (user_id, rank, item_id, item_title, score, "
        "target_item_id, hit) plus a JSON file with the same stem.",
        formatter_class=HelpFormatter,
    )
    add_data_args(p)
    add_model_args(p)
    add_decode_args(p, many=False)
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output CSV; the JSON goes next to it with the suffix .json (so --out must not "
        "end in .json)",
    )
    add_overwrite(p, "--out CSV and its .json")

    p = sub.add_parser(
        "evaluate",
        help="NDCG/HR@{1,3,5,10,20}, diversity and entropy plots for one or more decoders",
        description="Decode with each method, match recommendations to the ground truth "
        "through trie leaves, compare every method with the most-popular baselines on the same "
        "rows (95% user-clustered bootstrap intervals, paired differences, minimum detectable "
        "effects) and write metrics.json, metrics.csv, report.md, recommendations.csv and "
        "entropy_by_step.png to --out. Under 'accelerate launch' the rows are sharded across "
        "processes and the results gathered on the main process.",
        formatter_class=HelpFormatter,
    )
    add_data_args(p)
    add_model_args(p)
    add_decode_args(p, many=True)
    p.add_argument(
        "--bootstrap",
        type=positive_int,
        default=1000,
        help="resamples of the 95%% intervals (users resampled: a user's rows move together)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    add_overwrite(p, "--out folder")


def _methods(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """``--methods`` as ``{name: decoding settings}`` (``igd`` with ``--alpha``)."""
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


def _decode_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """recommend_many's decoding keywords from the options."""
    return {
        "template": args.template,
        "num_beams": args.num_beams,
        "batch_size": args.batch_size,
        "max_prompt_tokens": args.max_prompt_tokens,
        "max_history_items": args.max_history_items,
        "progress": not args.no_progress,
        "generate_fn": loading.load_decoder(args.decoder),
    }


def _filter_kwargs(args: argparse.Namespace, ds: Any, rows: Sequence[Any]) -> dict[str, Any]:
    """recommend_many's item filter / CF keywords from --exclude-history, --popularity-prior
    and --item-scores (rows: the selected samples of --split)."""
    import numpy as np

    from igdbeam.app.pipeline import history_exclusions, popularity, popularity_log_scores

    out: dict[str, Any] = {}
    if loading.exclude_history(args):
        out["exclude_item_ids"] = history_exclusions(ds.catalog, rows, loading.all_splits(args, ds))
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
    from igdbeam.app.pipeline import METHODS, dist_state, recommend_sharded, recommendations_table
    from igdbeam.app.pipeline import select_test_users as pick
    from igdbeam.io import atomic_open, dump_csv, dump_json

    out = Path(args.out)
    if out.suffix.lower() == ".json":
        raise ValueError(
            f"--out {str(out)!r} ends in .json, the name of the JSON written next to the CSV; "
            f"name the CSV instead (e.g. --out {str(out.with_suffix('.csv'))!r})"
        )
    out_json = out.with_suffix(".json")
    check_out_file(out, args.overwrite)
    check_out_file(out_json, args.overwrite, "--out's JSON")
    loading.load_decoder(args.decoder)  # a bad decoder fails before the model is loaded
    if args.method == "custom":
        settings = {"alpha": args.alpha, "length_penalty": args.length_penalty}
    else:
        settings = dict(METHODS[args.method])
        if args.method == "igd":
            settings["alpha"] = args.alpha
    ds, model, tok, trie = loading.setup(args, (args.split,))
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
    from igdbeam.app.pipeline import (
        dist_state,
        history_exclusions,
        popularity,
        recommend_many_sharded,
        recommendations_table,
        target_positions,
    )
    from igdbeam.app.pipeline import select_test_users as pick
    from igdbeam.evaluation.analysis import entropy_curves, plot_entropy_curves
    from igdbeam.evaluation.metrics import evaluate_recommendations
    from igdbeam.evaluation.report import evaluation_report
    from igdbeam.io import atomic_dir, write_csv, write_json

    methods = _methods(args)
    check_out_dir(args.out, "evaluate", args.overwrite)
    loading.load_decoder(args.decoder)  # a bad decoder fails before the model is loaded
    ds, model, tok, trie = loading.setup(args, (args.split,))
    rows = pick(ds.split(args.split), args.num_users, args.seed)
    targets = target_positions(ds, rows)
    pop = popularity(ds)
    state = dist_state()
    results, ranked, rec_rows = [], {}, []
    filters = _filter_kwargs(args, ds, rows)
    decoded = recommend_many_sharded(
        model, tok, trie, rows, methods, **_decode_kwargs(args), **filters
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
        # Every decoder next to the popularity baselines on the same rows, with user-clustered
        # intervals and paired differences; "history" is what the user rated before each row.
        full = loading.all_splits(args, ds)
        excluded = loading.exclude_history(args)
        report = evaluation_report(
            ranked,
            rows,
            full,
            trie,
            exclude_history=excluded,
            history=filters.get("exclude_item_ids") or history_exclusions(full.catalog, rows, full),
            popularity=pop,
            sasrec=False,
            num_resamples=args.bootstrap,
            seed=args.seed,
            title=f"## igdbeam evaluate: {args.split} split",
        )
        # Built in a temp folder next to --out and renamed into place when complete.
        with atomic_dir(out, command="evaluate", overwrite=args.overwrite, option="--out") as tmp:
            write_json(
                tmp / "metrics.json",
                {
                    "num_rows": len(rows),
                    "num_users": len({r.user_id for r in rows}),
                    "exclude_history": loading.exclude_history(args),
                    "num_processes": state.num_processes,
                    "results": results,
                    "evaluation": report["evaluation"],
                    "report": report["results"],
                    "entropy_by_step": curves,
                },
            )
            write_csv(tmp / "metrics.csv", results)
            with open(tmp / "report.md", "w", encoding="utf-8") as fh:
                fh.write(report["markdown"])
            write_csv(tmp / "recommendations.csv", rec_rows)
            # After the results: a plot that fails is reported, the results are kept.
            failures: list[str] = []
            try_plot(failures, plot_entropy_curves, tmp / "entropy_by_step.png", curves)
        print(format_table(results, EVALUATE_COLUMNS))
        print()
        print(report["markdown"])
        print(f"{len(rows)} rows on {state.num_processes} process(es); results in {out}/")
        if failures:
            raise PlotError(f"the results are in {str(out)!r}", failures)
    return 0
