"""The experiment's report: metrics with 95% bootstrap intervals, paired differences against the
baseline, the Table 2 ablation, training curves; as JSON, CSV, Markdown and a PNG.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from igdbeam.app.io_utils import atomic_open, write_csv, write_json
from igdbeam.evaluation.bootstrap import (
    ACCURACY,
    REPORTED,
    RowMetrics,
    bootstrap,
    mean_over,
    paired_difference,
    resample_indices,
)

BASELINE = ("plain", "d3")  # the D3 baseline: cross-entropy fine-tune, length penalty 0
ABLATION = (
    ("IGD (loss + decoding)", "igd", "igd"),
    ("w/o decoding weights (IGD loss, D3 decoding)", "igd", "d3"),
    ("w/o loss weights (plain loss, IGD decoding)", "plain", "igd"),
    ("w/o both (= D3)", "plain", "d3"),
)
DECODING_LABEL = {"bigrec": "BIGRec (lp 1)", "d3": "D3 (lp 0)", "igd": "D3 + IGD"}


def _loss_of(name: str) -> str:
    return name.split("-", 1)[0]


def cell_rows(
    ranked: Mapping[tuple[str, str], np.ndarray],
    targets: np.ndarray,
    trie: Any,
    popularity: np.ndarray,
) -> dict[tuple[str, str], list[RowMetrics]]:
    """``{(loss, decoding): [RowMetrics]}`` of one seed's ranked lists on the same rows."""
    return {key: [RowMetrics(items, targets, trie, popularity)] for key, items in ranked.items()}


def cell_metrics(
    experiment: Any, decoded: Mapping[str, Mapping[str, np.ndarray]]
) -> dict[tuple[str, str], list[RowMetrics]]:
    """``{(loss, decoding): [RowMetrics per seed]}`` on the experiment's test rows."""
    from igdbeam.app.pipeline import target_positions

    targets = target_positions(experiment._ds, experiment.test_rows)
    cells: dict[tuple[str, str], list[RowMetrics]] = {}
    for run, methods in decoded.items():
        for method, ranked in methods.items():
            rm = RowMetrics(ranked, targets, experiment.trie, experiment.popularity)
            cells.setdefault((_loss_of(run), method), []).append(rm)
    return cells


def summarize(
    cells: Mapping[tuple[str, str], list[RowMetrics]], num_resamples: int, seed: int = 0
) -> list[dict[str, Any]]:
    """One record per cell: each metric's value and interval, and the paired difference of each
    accuracy metric against the baseline cell (same rows, same resamples)."""
    num_rows = len(next(iter(cells.values()))[0])
    draws = resample_indices(num_rows, num_resamples, seed)
    stats = {key: mean_over(runs) for key, runs in cells.items()}
    base = stats.get(BASELINE)
    records = []
    for (loss, method), stat in stats.items():
        rec: dict[str, Any] = {
            "loss": loss,
            "decoding": method,
            "seeds": len(cells[(loss, method)]),
            "rows": num_rows,
            "metrics": bootstrap(stat, draws),
        }
        if base is not None and (loss, method) != BASELINE:
            diff = bootstrap(paired_difference(stat, base), draws)
            rec["vs_baseline"] = {m: diff[m] for m in ACCURACY}
        records.append(rec)
    return records


def format_interval(m: Mapping[str, float], digits: int = 4) -> str:
    """``value [low, high]`` of one bootstrapped metric."""
    return f"{m['value']:.{digits}f} [{m['low']:.{digits}f}, {m['high']:.{digits}f}]"


def format_difference(m: Mapping[str, float] | None, baseline: str = "(baseline)") -> str:
    """A paired difference with its interval, ``*`` when the interval excludes 0; ``baseline``
    for the baseline cell itself (``m`` None)."""
    if m is None:
        return baseline
    sign = " *" if m["low"] > 0 or m["high"] < 0 else ""
    return f"{m['value']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}]{sign}"


def markdown_tables(records: list[dict[str, Any]], header: str) -> str:
    """The main grid and the ablation as Markdown (values with 95% intervals)."""
    by_key = {(r["loss"], r["decoding"]): r for r in records}
    lines = [header, "", "### All cells", ""]
    lines.append(
        "| loss | decoding | NDCG@5 | NDCG@10 | HR@5 | HR@10 | coverage | top-1st-token share "
        "| mean pop. | NDCG@10 - D3 baseline |"
    )
    lines.append("|" + "---|" * 10)
    for r in records:
        m = r["metrics"]
        lines.append(
            f"| {r['loss']} | {DECODING_LABEL.get(r['decoding'], r['decoding'])} | "
            + " | ".join(format_interval(m[k]) for k in ACCURACY)
            + f" | {m['coverage']['value']:.3f} | {m['mean_top_first_token_share']['value']:.3f}"
            f" | {m['mean_popularity']['value']:.1f} | "
            f"{format_difference(r.get('vs_baseline', {}).get('NDCG@10'))} |"
        )
    lines += ["", "### Ablation (the paper's Table 2)", ""]
    lines.append("| variant | NDCG@10 | HR@10 | NDCG@10 - D3 | HR@10 - D3 |")
    lines.append("|---|---|---|---|---|")
    for label, loss, method in ABLATION:
        cell = by_key.get((loss, method))
        if cell is None:
            lines.append(f"| {label} | (not run) | | | |")
            continue
        diff = cell.get("vs_baseline", {})
        lines.append(
            f"| {label} | {format_interval(cell['metrics']['NDCG@10'])} | "
            f"{format_interval(cell['metrics']['HR@10'])} | "
            f"{format_difference(diff.get('NDCG@10'))} | {format_difference(diff.get('HR@10'))} |"
        )
    lines += [
        "",
        "Values: mean over seeds on the same test rows, with 95% percentile bootstrap intervals "
        "over test rows. Differences are paired (same rows, same resamples); `*` marks an "
        "interval that excludes 0.",
    ]
    return "\n".join(lines) + "\n"


def curves(logs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per run: the validation losses on zero-IG and positive-IG tokens, and the training loss,
    by optimizer step (from the Trainer's ``log_history``)."""
    out: dict[str, dict[str, list[float]]] = {}
    for run, log in logs.items():
        c: dict[str, list[float]] = {k: [] for k in ("step", "zero_ig", "pos_ig")}
        c.update(train_step=[], train_loss=[])
        for rec in log.get("log_history", []):
            if "eval_loss_zero_ig" in rec:
                c["step"].append(float(rec.get("step", 0)))
                c["zero_ig"].append(float(rec["eval_loss_zero_ig"]))
                c["pos_ig"].append(float(rec.get("eval_loss_pos_ig", float("nan"))))
            elif "loss" in rec:
                c["train_step"].append(float(rec.get("step", 0)))
                c["train_loss"].append(float(rec["loss"]))
        out[run] = c
    return out


def plot_curves(data: Mapping[str, Mapping[str, list[float]]], path: Path) -> Path:
    """Validation cross-entropy on zero-IG vs positive-IG tokens over training, one line a run."""
    from igdbeam.evaluation.analysis import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for run, c in data.items():
        axes[0].plot(c["step"], c["zero_ig"], marker="o", label=run)
        axes[1].plot(c["step"], c["pos_ig"], marker="o", label=run)
    axes[0].set_title("validation CE on zero-IG tokens")
    axes[1].set_title("validation CE on positive-IG tokens")
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("mean token cross-entropy (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def write_report(
    experiment: Any,
    decoded: Mapping[str, Mapping[str, np.ndarray]],
    logs: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """Compute every record and write results.json / results.csv / results.md / the PNG."""
    from igdbeam.evaluation.analysis import zero_ig_report

    out = Path(experiment.out)
    p = experiment.profile
    records = summarize(cell_metrics(experiment, decoded), p.bootstrap)
    stats = zero_ig_report(experiment.trie)
    header = (
        f"## igdbeam experiment `{p.name}`: {experiment.dataset_name}, model "
        f"`{Path(str(experiment.model_spec)).name}`\n\n"
        f"{len(experiment.test_rows)} test rows ({len({r.user_id for r in experiment.test_rows})}"
        f" users), {len(experiment.train_rows)} training rows, {p.train_steps} steps x "
        f"{p.batch_size} rows, LoRA r={p.lora_r} (0 = full fine-tune), lr {p.learning_rate:g}, "
        f"{p.max_history_items} history items, seeds {list(p.seeds)}, beta {p.beta:g}, "
        f"alpha {p.alpha:g}, {p.num_beams} beams, catalog `{p.catalog}` "
        f"({stats['num_leaves']} items in the trie; zero-IG token share "
        f"{100 * stats['zero_ig_token_share']:.1f}%)."
    )
    curve_data = curves(logs)
    plot_curves(curve_data, out / "training_curves.png")
    summary = {
        "settings": experiment.settings(),
        "rows": len(experiment.test_rows),
        "trie": {k: v for k, v in stats.items() if k != "zero_ig_share_by_step"},
        "results": records,
        "training_curves": curve_data,
        "train_seconds": {run: log.get("seconds") for run, log in logs.items()},
    }
    write_json(out / "results.json", summary)
    flat = []
    for r in records:
        row = {"loss": r["loss"], "decoding": r["decoding"], "seeds": r["seeds"], "rows": r["rows"]}
        for m in REPORTED:
            v = r["metrics"][m]
            row.update({m: v["value"], f"{m}_low": v["low"], f"{m}_high": v["high"]})
        for m, v in r.get("vs_baseline", {}).items():
            row.update({f"{m}_diff": v["value"], f"{m}_diff_low": v["low"]})
            row[f"{m}_diff_high"] = v["high"]
        flat.append(row)
    write_csv(out / "results.csv", flat)
    with atomic_open(out / "results.md", "w") as f:
        f.write(markdown_tables(records, header))
    return summary
