"""How the evaluation's records are named and written: cell labels, the Markdown tables (every
cell and baseline, the paired differences with their MDE, the Table 2 ablation, the header and
the legend) and the flat CSV rows. The records come from
:func:`igdbeam.evaluation.report.summarize`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from igdbeam.evaluation.baselines import BASELINE_LABELS
from igdbeam.evaluation.bootstrap import ACCURACY, REPORTED, excludes_zero

Key = tuple[str, str]

BASELINE: Key = ("plain", "d3")  # the D3 baseline: cross-entropy fine-tune, length penalty 0
BASELINE_GROUP = "baseline"  # the loss field of the non-LLM baselines' records
ABLATION = (
    ("IGD (loss + decoding)", "igd", "igd"),
    ("w/o decoding weights (IGD loss, D3 decoding)", "igd", "d3"),
    ("w/o loss weights (plain loss, IGD decoding)", "plain", "igd"),
    ("w/o both (= D3)", "plain", "d3"),
)
DECODING_LABEL = {"bigrec": "BIGRec (lp 1)", "d3": "D3 (lp 0)", "igd": "D3 + IGD"}
# The paired differences the Markdown shows (the JSON and CSV hold every accuracy metric).
SHOWN_DIFFERENCES = ("NDCG@10", "HR@10")


def cell_label(key: Key) -> str:
    """How a cell is named in the tables: ``plain loss, D3 (lp 0)``, ``most-popular``, ``d3``."""
    group, name = key
    if group == BASELINE_GROUP:
        return BASELINE_LABELS.get(name, name)
    decoding = DECODING_LABEL.get(name, name)
    return f"{group} loss, {decoding}" if group else decoding


def reference_id(key: Key) -> str:
    """The short name of a reference in the records (``vs``) and CSV columns."""
    group, name = key
    if key == BASELINE or (group == "" and name == "d3"):
        return "d3"
    return name if group in (BASELINE_GROUP, "") else f"{group}-{name}"


def default_references(keys: Sequence[Key]) -> list[Key]:
    """The D3 cell (``plain`` loss, or the single model's ``d3``) and every baseline present."""
    refs = [k for k in (BASELINE, ("", "d3")) if k in keys]
    return refs + [k for k in keys if k[0] == BASELINE_GROUP]


def evaluation_header(info: Mapping[str, Any]) -> str:
    """The lines every table starts with: rows, users, history exclusion, intervals."""
    hist = (
        "**excluded** (no method may recommend an item of the row's history"
        if info["history_excluded"]
        else "**not excluded** (items of the row's history may be recommended"
    )
    hist += f"; {info['history_items_per_row']:.1f} history items per row)"
    lines = [
        f"- Rows: **{info['rows']} test rows from {info['users']} users**; history {hist}.",
        f"- Intervals: {info['interval']}; `*` marks a difference whose interval excludes 0; "
        f"MDE = minimum detectable effect = {info['mde']}.",
        f"- Candidates: the {info['candidate_items']} of {info['catalog_items']} catalog items "
        f"the trie holds (the baselines rank the same ones); {info['unreachable_targets']} of the "
        f"{info['rows']} targets are not among them (never a training target), so no method "
        "here can hit them.",
    ]
    sas = info.get("sasrec")
    if sas is not None:
        lines.append(f"- SASRec: {sas['note']}")
    return "\n".join(lines)


LEGEND = """\
**Legend.** NDCG@K / HR@K: one relevant item per row (the next item); a hit at 0-based rank r < K
scores 1/log2(r + 2) (NDCG) or 1 (HR), averaged over rows. **coverage**: distinct items in the
top-10 lists of all rows / catalog items; it grows with the number of rows, so compare it only
inside one table. It is given without an interval: it is a count of distinct items, not an
average over rows, and a bootstrap resample holds only ~63% distinct rows, so resampled coverage
is biased low (the old intervals lay below their own estimates). **top-1st-token share**: per
list, the share of items starting with the list's most common first title token (the token-level
bias IGD targets), averaged over lists. **mean pop.**: the mean number of times a recommended item
(a top-10 slot) is a target in the training split: higher means more popular items; the
most-popular list has the largest possible value. **Baselines**: most-popular = the 10 most
frequent training targets for every row; most-popular, history excluded = the same skipping the
row's history items; SASRec = RecTools' self-attentive sequential model trained on the training
split, each row's history in, top 10 out. **Paired difference** = method - reference on the same
rows; its interval resamples the same users for both. **MDE** = the smallest true difference the
comparison detects with 80% power at 5% two-sided: 2.80 x its clustered standard error, also as
a percentage of the reference's value.
"""


def format_interval(m: Mapping[str, Any], digits: int = 4) -> str:
    """``value [low, high]`` of one bootstrapped metric; the value alone without interval."""
    if m.get("low") is None:
        return f"{m['value']:.{digits}f}"
    return f"{m['value']:.{digits}f} [{m['low']:.{digits}f}, {m['high']:.{digits}f}]"


def format_difference(m: Mapping[str, Any] | None, baseline: str = "(baseline)") -> str:
    """A paired difference with its interval, ``*`` when the interval excludes 0; ``baseline``
    for the baseline cell itself (``m`` None)."""
    if m is None:
        return baseline
    sign = " *" if excludes_zero(m) else ""
    return f"{m['value']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}]{sign}"


def format_mde(m: Mapping[str, Any] | None) -> str:
    """``0.0123 (57%)``: the MDE and its share of the reference's value."""
    if m is None:
        return ""
    rel = m.get("mde_relative")
    pct = "n/a" if rel is None or rel != rel else f"{100 * rel:.0f}%"
    return f"{m['mde']:.4f} ({pct})"


def _main_table(records: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| method | NDCG@5 | NDCG@10 | HR@5 | HR@10 | coverage | top-1st-token share | mean pop. |",
        "|" + "---|" * 8,
    ]
    for r in records:
        m = r["metrics"]
        lines.append(
            f"| {r['label']} | "
            + " | ".join(format_interval(m[k]) for k in ACCURACY)
            + f" | {m['coverage']['value']:.3f} | "
            f"{format_interval(m['mean_top_first_token_share'], 3)} | "
            f"{format_interval(m['mean_popularity'], 1)} |"
        )
    return lines


def _difference_tables(records: Sequence[Mapping[str, Any]]) -> list[str]:
    by_id = {}
    for r in records:
        by_id[reference_id((r["loss"], r["decoding"]))] = r
    ids: list[str] = []
    for r in records:
        ids += [i for i in r.get("vs", {}) if i not in ids]
    lines: list[str] = []
    for ref in ids:
        base = by_id[ref]
        values = ", ".join(f"{m} {base['metrics'][m]['value']:.4f}" for m in SHOWN_DIFFERENCES)
        lines += ["", f"#### vs {base['label']} ({values})", ""]
        head = "| method |"
        for m in SHOWN_DIFFERENCES:
            head += f" {m} - ref. [95% CI] | MDE {m} (% of ref.) |"
        lines += [head, "|" + "---|" * (1 + 2 * len(SHOWN_DIFFERENCES))]
        for r in records:
            d = r.get("vs", {}).get(ref)
            if d is None:
                continue
            cols = [f"{format_difference(d[m])} | {format_mde(d[m])}" for m in SHOWN_DIFFERENCES]
            lines.append(f"| {r['label']} | " + " | ".join(cols) + " |")
    return lines


def _ablation_table(records: Sequence[Mapping[str, Any]]) -> list[str]:
    by_key = {(r["loss"], r["decoding"]): r for r in records}
    lines = [
        "| variant | NDCG@10 | HR@10 | NDCG@10 - D3 | MDE NDCG@10 (% of D3) | HR@10 - D3 "
        "| MDE HR@10 (% of D3) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, loss, method in ABLATION:
        cell = by_key.get((loss, method))
        if cell is None:
            lines.append(f"| {label} | (not run) | | | | | |")
            continue
        diff = cell.get("vs_baseline", {})
        lines.append(
            f"| {label} | {format_interval(cell['metrics']['NDCG@10'])} | "
            f"{format_interval(cell['metrics']['HR@10'])} | "
            f"{format_difference(diff.get('NDCG@10'))} | {format_mde(diff.get('NDCG@10'))} | "
            f"{format_difference(diff.get('HR@10'))} | {format_mde(diff.get('HR@10'))} |"
        )
    return lines


def markdown_tables(
    records: list[dict[str, Any]], header: str, info: Mapping[str, Any] | None = None
) -> str:
    """The report as Markdown: the header, every cell and baseline with 95% intervals, the
    paired differences against each reference with their MDE, the ablation and the legend."""
    lines = [header, ""]
    if info is not None:
        lines += [evaluation_header(info), ""]
    lines += ["### All cells and baselines", "", *_main_table(records)]
    lines += ["", "### Paired differences (method - reference, same users resampled)"]
    lines += _difference_tables(records)
    keys = {(r["loss"], r["decoding"]) for r in records}
    if any((loss, method) in keys for _, loss, method in ABLATION):
        lines += ["", "### Ablation (the paper's Table 2)", "", *_ablation_table(records)]
    lines += ["", LEGEND]
    return "\n".join(lines)


def flat_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One CSV row per cell: every metric with its interval, every paired difference with its
    interval and MDE (``NDCG@10_vs_most-popular``, ``..._low``, ``..._high``, ``..._mde``); the
    differences against D3 also under the older names ``NDCG@10_diff``, ``..._diff_low/high``."""
    flat = []
    for r in records:
        row: dict[str, Any] = {
            "method": r["label"],
            "kind": r["kind"],
            "loss": r["loss"],
            "decoding": r["decoding"],
            "seeds": r["seeds"],
            "rows": r["rows"],
        }
        for m in REPORTED:
            v = r["metrics"][m]
            row.update({m: v["value"], f"{m}_low": v["low"], f"{m}_high": v["high"]})
        for m, v in r.get("vs_baseline", {}).items():
            row.update({f"{m}_diff": v["value"], f"{m}_diff_low": v["low"]})
            row[f"{m}_diff_high"] = v["high"]
        for ref, diffs in r.get("vs", {}).items():
            for m, v in diffs.items():
                col = f"{m}_vs_{ref}"
                row.update({col: v["value"], f"{col}_low": v["low"], f"{col}_high": v["high"]})
                row.update({f"{col}_mde": v["mde"], f"{col}_mde_relative": v["mde_relative"]})
        flat.append(row)
    return flat
