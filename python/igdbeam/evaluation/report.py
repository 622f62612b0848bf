"""The evaluation report: every method on the same test rows next to non-LLM baselines, with
user-clustered 95% bootstrap intervals, paired differences, their minimum detectable effects,
the Table 2 ablation and the training curves; as JSON, CSV, Markdown and a PNG.

Contract
--------
``write_report(experiment, decoded, logs, *, sasrec=None)`` is what
:class:`igdbeam.app.experiment.Experiment` calls. It reads these attributes of ``experiment``:
``out`` (the folder), ``profile`` (``name``, ``bootstrap``, ``exclude_history`` and the sizes in
the header), ``dataset_name``, ``model_spec``, ``trie``, ``popularity`` (``[num_items]``
training-target counts), ``_ds`` (the :class:`~igdbeam.data.Dataset`: its catalog and ``train``
split), ``test_rows``, ``train_rows``, ``settings()`` and ``_history(rows)`` (per row, the
catalog positions the decoders exclude with ``exclude_history``: what "history" means for the
baselines too). ``decoded`` is ``{run name: {decoding:
[rows, K] item ids}}`` (a run name starts with its loss: ``igd-b0.1-s0``), ``logs`` is ``{run
name: train_log.json}``. It adds the baselines itself, on ``experiment.test_rows``:

* ``most-popular`` and ``most-popular-unseen`` (``_history(row)`` skipped), from
  ``experiment.popularity``, restricted to the items of the trie (the LLM's candidates);
* SASRec (:mod:`igdbeam.evaluation.sasrec`) trained on the whole ``train`` split of
  ``experiment._ds``, excluding ``_history(row)`` when ``profile.exclude_history``.
  ``sasrec=None`` uses the lists cached in ``out/baselines/`` or trains them when RecTools is
  installed (else the report says it was not run); ``True`` insists (ImportError without
  RecTools); ``False`` skips.

:func:`evaluation_report` gives the same tables for any decoded lists on any rows (the
``evaluate`` command, the demo): ``evaluation_report({name: [rows, K] ids}, rows, dataset, trie,
exclude_history=...)``. Every table states whether history was excluded, the number of rows and
users and the interval method, and ends with a legend (coverage, mean popularity, MDE).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from igdbeam.data.bigrec_csv import target_positions
from igdbeam.evaluation.baselines import SASREC, popularity_baselines, trie_items
from igdbeam.evaluation.bootstrap import (
    LEVEL,
    POWER,
    ClusteredBootstrap,
    RowMetrics,
    mde_factor,
)
from igdbeam.evaluation.tables import (
    BASELINE,
    BASELINE_GROUP,
    Key,
    cell_label,
    default_references,
    evaluation_header,
    flat_rows,
    format_difference,
    format_interval,
    markdown_tables,
    reference_id,
)
from igdbeam.io import atomic_open, write_csv, write_json

# Re-exported: the demo and the CLI format records with these.
__all__ = [
    "BASELINE",
    "baseline_cells",
    "cell_metrics",
    "cell_rows",
    "evaluate_with_baselines",
    "evaluation_header",
    "evaluation_info",
    "evaluation_report",
    "format_difference",
    "format_interval",
    "markdown_tables",
    "summarize",
    "write_report",
]


def history_positions(catalog: Any, rows: Sequence[Any]) -> list[list[int]]:
    """Catalog positions of each row's history items (ids missing from the catalog skipped)."""
    known = set(catalog.ids)
    return [[catalog.position(i) for i in r.history_item_id if i in known] for r in rows]


def training_popularity(dataset: Any) -> np.ndarray:
    """``[num_items]``: how often each catalog item is a target of the training split."""
    pos = target_positions(dataset, dataset.split("train"))
    return np.bincount(pos, minlength=len(dataset.catalog)).astype(np.float64)


def cell_rows(
    ranked: Mapping[Key, np.ndarray],
    targets: np.ndarray,
    trie: Any,
    popularity: np.ndarray,
) -> dict[Key, list[RowMetrics]]:
    """``{(loss, decoding): [RowMetrics]}`` of one seed's ranked lists on the same rows."""
    return {key: [RowMetrics(items, targets, trie, popularity)] for key, items in ranked.items()}


def cell_metrics(
    experiment: Any, decoded: Mapping[str, Mapping[str, np.ndarray]]
) -> dict[Key, list[RowMetrics]]:
    """``{(loss, decoding): [RowMetrics per seed]}`` on the experiment's test rows."""
    targets = target_positions(experiment._ds, experiment.test_rows)
    cells: dict[Key, list[RowMetrics]] = {}
    for run, methods in decoded.items():
        for method, ranked in methods.items():
            rm = RowMetrics(ranked, targets, experiment.trie, experiment.popularity)
            cells.setdefault((run.split("-", 1)[0], method), []).append(rm)
    return cells


def baseline_cells(
    history: Sequence[Sequence[int]],
    trie: Any,
    popularity: np.ndarray,
    targets: np.ndarray,
    *,
    sasrec: np.ndarray | None = None,
    k: int = 10,
) -> dict[Key, list[RowMetrics]]:
    """The baselines' cells on the rows: both most-popular lists over the trie's items (see
    :mod:`igdbeam.evaluation.baselines`; ``history``: per row, the items the history-excluding
    one skips) and, when given, SASRec's ``[rows, k]`` lists."""
    lists = popularity_baselines(popularity, history, k=k, candidates=trie_items(trie))
    if sasrec is not None:
        lists[SASREC] = np.asarray(sasrec, dtype=np.int64)
    return {
        (BASELINE_GROUP, name): [RowMetrics(items, targets, trie, popularity)]
        for name, items in lists.items()
    }


def summarize(
    cells: Mapping[Key, Sequence[RowMetrics]],
    num_resamples: int,
    seed: int = 0,
    *,
    users: Sequence[Any] | None = None,
    references: Sequence[Key] | None = None,
    level: float = LEVEL,
) -> list[dict[str, Any]]:
    """One record per cell: each metric's value and interval, and the paired differences of every
    accuracy metric against each reference cell (same rows, same resampled users).

    Args:
        cells: ``{(loss, decoding): [RowMetrics per seed]}``, all on the same rows.
        num_resamples / seed / level: the bootstrap.
        users: the user of each row (the clusters); None: every row its own (row bootstrap).
        references: the cells every other cell is compared with (None:
            :func:`default_references`).

    Returns:
        records ``{"loss", "decoding", "label", "kind", "seeds", "rows", "metrics", "vs"}``:
        ``metrics[m] = {"value", "low", "high", "se"}`` (coverage without interval: ``None``),
        ``vs[reference id][m] = {"value", "low", "high", "se", "mde", "mde_relative"}``;
        ``vs_baseline`` is ``vs["d3"]`` (absent for the D3 cell itself).
    """
    num_rows = len(next(iter(cells.values()))[0])
    boot = ClusteredBootstrap(
        users, num_rows=num_rows, num_resamples=num_resamples, seed=seed, level=level
    )
    keys = list(cells)
    refs = default_references(keys) if references is None else [r for r in references if r in cells]
    records = []
    for key, runs in cells.items():
        rec: dict[str, Any] = {
            "loss": key[0],
            "decoding": key[1],
            "label": cell_label(key),
            "kind": "baseline" if key[0] == BASELINE_GROUP else "model",
            "seeds": len(runs),
            "rows": num_rows,
            "metrics": boot.summary(runs),
        }
        vs = {reference_id(r): boot.difference(runs, cells[r]) for r in refs if r != key}
        if vs:
            rec["vs"] = vs
        if "d3" in vs:
            rec["vs_baseline"] = vs["d3"]
        records.append(rec)
    return records


def evaluation_info(
    rows: Sequence[Any],
    targets: np.ndarray,
    trie: Any,
    history: Sequence[Sequence[int]],
    *,
    exclude_history: bool,
    num_resamples: int,
    clustered: bool = True,
    level: float = LEVEL,
    sasrec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What every table's header states: rows, users, history exclusion, interval method, the
    targets no trie-restricted method can hit, and how the SASRec row was made."""
    users = [r.user_id for r in rows]
    boot_users = len(set(users)) if clustered else len(rows)
    leaf = trie.array("item_leaf").cpu().numpy()
    unreachable = int((leaf[np.asarray(targets, dtype=np.int64)] < 0).sum())
    scheme = "user-clustered" if clustered else "row"
    return {
        "rows": len(rows),
        "users": len(set(users)),
        "history_excluded": bool(exclude_history),
        "history_items_per_row": float(np.mean([len(h) for h in history])) if rows else 0.0,
        "interval": (
            f"{100 * level:g}% percentile bootstrap, {scheme} ({num_resamples} resamples of "
            f"{boot_users} {'users' if clustered else 'rows'}; paired differences resample the "
            "same users for both methods)"
        ),
        "level": level,
        "resamples": num_resamples,
        "clustered": clustered,
        "catalog_items": int(trie.num_items),
        "candidate_items": int((leaf >= 0).sum()),
        "unreachable_targets": unreachable,
        "mde": f"{mde_factor(level, POWER):.2f} x clustered SE (80% power, 5% two-sided)",
        "sasrec": dict(sasrec) if sasrec is not None else None,
    }


def sasrec_lists(
    mode: bool | None,
    train: Sequence[Any],
    rows: Sequence[Any],
    catalog: Any,
    trie: Any,
    *,
    exclude: Sequence[Sequence[int]] | None,
    cache_dir: Path | None,
    settings: Any = None,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """SASRec's lists for ``rows`` (or None) and what the report's header says about them.

    ``mode``: True trains (or reads the cache) and lets a missing RecTools raise ImportError;
    None does the same but returns no lists when RecTools is missing; False returns none.
    """
    from igdbeam.evaluation.sasrec import EXTRA_HINT, sasrec_recommendations

    if mode is False:
        return None, {"note": "not run (turned off)."}
    try:
        res = sasrec_recommendations(
            train,
            rows,
            catalog,
            exclude=exclude,
            candidates=trie_items(trie),
            settings=settings,
            cache_dir=cache_dir,
        )
    except ImportError:
        if mode:
            raise
        return None, {"note": f"not run: RecTools is not installed ({EXTRA_HINT})."}
    s = res.settings
    where = f"read from `{res.path.name}`" if res.from_cache and res.path else "trained now"
    scored = "the rows"
    if s.get("test_rows", len(rows)) != len(rows) and res.path is not None:
        # Cut out of a cache of more rows (e.g. the whole split, for a report under way).
        scored = f"its {s['test_rows']} rows"
        where = f"these {len(rows)} rows cut from `{res.path.name}`"
    note = (
        f"trained on the {s['train_rows']} training rows ({s['train_sequences']} user sequences, "
        f"{s['train_interactions']} interactions), {s['epochs']} epochs, {s['n_factors']} "
        f"factors, {s['n_blocks']} blocks, last {s['session_max_len']} items, seed {s['seed']}, "
        f"{s['threads']} CPU thread: {res.train_seconds:.0f} s to train, "
        f"{res.recommend_seconds:.1f} s to score {scored} ({where}; RecTools "
        f"{res.versions.get('rectools', '?')})."
    )
    if res.unscored_rows:
        note += f" {res.unscored_rows} rows had no history item SASRec knows (empty lists)."
    info = {
        "note": note,
        "train_seconds": res.train_seconds,
        "recommend_seconds": res.recommend_seconds,
        "settings": s,
        "versions": res.versions,
        "cache_file": None if res.path is None else str(res.path),
        "from_cache": res.from_cache,
        "unscored_rows": res.unscored_rows,
    }
    return res.item_ids, info


def evaluate_with_baselines(
    cells: Mapping[Key, list[RowMetrics]],
    rows: Sequence[Any],
    dataset: Any,
    trie: Any,
    popularity: np.ndarray,
    *,
    exclude_history: bool,
    history: Sequence[Sequence[int]] | None = None,
    sasrec: bool | None = False,
    sasrec_settings: Any = None,
    cache_dir: str | Path | None = None,
    num_resamples: int = 1000,
    seed: int = 0,
    clustered: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Add the baselines to ``cells`` and summarize all of them on ``rows``.

    Returns:
        ``(records, info)``: :func:`summarize`'s records (baselines included) and
        :func:`evaluation_info`'s header facts.
    """
    targets = target_positions(dataset, rows)
    hist = history_positions(dataset.catalog, rows) if history is None else history
    if len(hist) != len(rows):
        raise ValueError(f"history has {len(hist)} rows for {len(rows)} rows")
    sas, sas_info = sasrec_lists(
        sasrec,
        dataset.split("train") if sasrec is not False else [],
        rows,
        dataset.catalog,
        trie,
        exclude=hist if exclude_history else None,
        cache_dir=None if cache_dir is None else Path(cache_dir),
        settings=sasrec_settings,
    )
    everything = dict(cells)
    everything.update(baseline_cells(hist, trie, popularity, targets, sasrec=sas))
    users = [r.user_id for r in rows] if clustered else None
    records = summarize(everything, num_resamples, seed, users=users)
    info = evaluation_info(
        rows,
        targets,
        trie,
        hist,
        exclude_history=exclude_history,
        num_resamples=num_resamples,
        clustered=clustered,
        sasrec=sas_info,
    )
    return records, info


def evaluation_report(
    ranked: Mapping[Any, np.ndarray | Sequence[np.ndarray]],
    rows: Sequence[Any],
    dataset: Any,
    trie: Any,
    *,
    exclude_history: bool,
    history: Sequence[Sequence[int]] | None = None,
    popularity: np.ndarray | None = None,
    sasrec: bool | None = False,
    sasrec_settings: Any = None,
    cache_dir: str | Path | None = None,
    num_resamples: int = 1000,
    seed: int = 0,
    clustered: bool = True,
    title: str = "",
) -> dict[str, Any]:
    """Evaluate decoded lists on ``rows`` next to the baselines, as every report does.

    Args:
        ranked: ``{method: [rows, K] catalog item ids}`` (or a list of arrays, one per seed);
            a key may also be a ``(loss, decoding)`` pair.
        rows: the test rows the lists were decoded for (their ``user_id``, history, target).
        dataset: the :class:`~igdbeam.data.Dataset` (catalog; its ``train`` split gives the
            popularity when ``popularity`` is None and SASRec's training data).
        trie: the trie the lists were decoded with (hits through leaves; the candidates).
        exclude_history: whether the lists excluded each row's history (stated in the header;
            SASRec follows it).
        history: per row, the items that count as its history (catalog positions): what the
            decoders excluded, what ``most-popular-unseen`` and (with ``exclude_history``)
            SASRec skip. None: the row's history items.
        popularity: ``[num_items]`` training-target counts (None: counted from ``dataset``).
        sasrec: False: no SASRec row; None: cached or trained when RecTools is installed;
            True: required.
        sasrec_settings: :class:`~igdbeam.evaluation.sasrec.SASRecSettings` (None: defaults).
        cache_dir: where SASRec's lists are cached (None: no cache).
        num_resamples / seed: the bootstrap.
        clustered: resample users (True) or rows.
        title: the Markdown's first line (``## ...``); empty: none.

    Returns:
        ``{"evaluation": header facts, "results": records (:func:`summarize`), "markdown": the
        tables with header and legend}``.
    """
    pop = training_popularity(dataset) if popularity is None else np.asarray(popularity)
    targets = target_positions(dataset, rows)
    cells: dict[Key, list[RowMetrics]] = {}
    for name, lists in ranked.items():
        key: Key = name if isinstance(name, tuple) else ("", str(name))
        runs = [lists] if isinstance(lists, np.ndarray) else list(lists)
        cells[key] = [RowMetrics(np.asarray(x), targets, trie, pop) for x in runs]
    records, info = evaluate_with_baselines(
        cells,
        rows,
        dataset,
        trie,
        pop,
        exclude_history=exclude_history,
        history=history,
        sasrec=sasrec,
        sasrec_settings=sasrec_settings,
        cache_dir=cache_dir,
        num_resamples=num_resamples,
        seed=seed,
        clustered=clustered,
    )
    return {
        "evaluation": info,
        "results": records,
        "markdown": markdown_tables(records, title, info),
    }


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


def fine_tune_table(logs: Mapping[str, Mapping[str, Any]], decoded: Sequence[str]) -> str:
    """A Markdown section on every trained run: steps, time, precision, last validation losses,
    and whether its test rows are decoded (a run trained but not decoded has no cells yet)."""
    lines = [
        "### Fine-tunes",
        "",
        "| run | steps | hours (its last process) | precision | "
        "last validation CE: zero-IG / positive-IG | test rows decoded |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for run, log in logs.items():
        evals = [r for r in log.get("log_history", []) if "eval_loss_zero_ig" in r]
        steps = max((int(r.get("step", 0)) for r in log.get("log_history", [])), default=0)
        last = (
            f"{evals[-1]['eval_loss_zero_ig']:.3f} / {evals[-1]['eval_loss_pos_ig']:.3f} "
            f"(step {int(evals[-1].get('step', 0))})"
            if evals
            else "-"
        )
        seconds = log.get("seconds")
        hours = f"{seconds / 3600:.2f}" if isinstance(seconds, int | float) else "-"
        precision = str(log.get("dtype", "-"))
        if log.get("bf16_autocast"):
            precision += " + bfloat16 autocast"
        if log.get("precision_note"):
            precision += " *"
            notes.append(f"\\* {run}: {log['precision_note']}.")
        done = "yes" if run in decoded else "not yet (no cells)"
        lines.append(f"| {run} | {steps} | {hours} | {precision} | {last} | {done} |")
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


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
    *,
    sasrec: bool | None = None,
    note: str | None = None,
    sections: Mapping[str, tuple[str, Any]] | None = None,
) -> dict[str, Any]:
    """Compute every record and write results.json / results.csv / results.md / the PNG.

    ``logs`` may hold runs that are trained but not decoded yet: their validation curves are
    plotted and listed, and they have no cells. ``note`` (Markdown) is printed under the
    header and stored in results.json (e.g. that only part of the rows is decoded yet).
    ``sections`` adds ``{key: (Markdown, records)}``: the Markdown at the end of results.md, the
    records under ``key`` in results.json.

    See the module docstring for what ``experiment`` must provide and what ``sasrec`` does.
    """
    from igdbeam.evaluation.analysis import zero_ig_report

    out = Path(experiment.out)
    p = experiment.profile
    rows = experiment.test_rows
    records, info = evaluate_with_baselines(
        cell_metrics(experiment, decoded),
        rows,
        experiment._ds,
        experiment.trie,
        experiment.popularity,
        exclude_history=bool(p.exclude_history),
        history=experiment._history(rows),
        sasrec=sasrec,
        cache_dir=out / "baselines",
        num_resamples=p.bootstrap,
    )
    stats = zero_ig_report(experiment.trie)
    header = (
        f"## igdbeam experiment `{p.name}`: {experiment.dataset_name}, model "
        f"`{Path(str(experiment.model_spec)).name}`\n\n"
        f"{len(rows)} test rows ({info['users']} users), {len(experiment.train_rows)} training "
        f"rows, {p.train_steps} steps x {p.batch_size} rows, LoRA r={p.lora_r} (0 = full "
        f"fine-tune), lr {p.learning_rate:g}, {p.max_history_items} history items, seeds "
        f"{list(p.seeds)}, beta {p.beta:g}, alpha {p.alpha:g}, {p.num_beams} beams, catalog "
        f"`{p.catalog}` ({stats['num_leaves']} items in the trie; zero-IG token share "
        f"{100 * stats['zero_ig_token_share']:.1f}%). Decoded in {p.dtype}."
    )
    models_from = experiment.settings().get("models_from")
    if models_from:
        header += (
            f" The fine-tunes are read from `{models_from}` (relative to this folder), trained "
            "there; their training precision is in the fine-tunes table below."
        )
    if note:
        header += "\n\n" + note
    curve_data = curves(logs)
    plot_curves(curve_data, out / "training_curves.png")
    summary = {
        "settings": experiment.settings(),
        "rows": len(rows),
        "note": note,
        "evaluation": info,
        "trie": {k: v for k, v in stats.items() if k != "zero_ig_share_by_step"},
        "results": records,
        "training_curves": curve_data,
        "train_seconds": {run: log.get("seconds") for run, log in logs.items()},
    }
    for key, (_, data) in (sections or {}).items():
        summary[key] = data
    write_json(out / "results.json", summary)
    write_csv(out / "results.csv", flat_rows(records))
    with atomic_open(out / "results.md", "w") as f:
        f.write(markdown_tables(records, header, info))
        f.write("\n" + fine_tune_table(logs, list(decoded)))
        for markdown, _ in (sections or {}).values():
            if markdown:
                f.write("\n" + markdown)
    return summary
