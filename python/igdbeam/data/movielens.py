"""Build BIGRec-format splits from MovieLens in RecBole's atomic-file format.

The ``.inter`` file holds ``user_id:token, item_id:token, rating:float, timestamp:float``; the
``.item`` file holds ``item_id:token`` and ``movie_title:token_seq`` (or ``:token``), optionally
``release_year``. Each user's interactions are sorted by time; every position with at least one
earlier item becomes a sample whose history is the (up to) ``max_history`` previous items; all
samples are split 80/10/10 by the target's timestamp (ties broken by user and position).
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from igdbeam.data.bigrec_csv import Catalog, DataFormatError, Sample, _clean_title, write_dataset

INTER_COLUMNS = ("user_id", "item_id", "timestamp")
ITEM_COLUMNS = ("item_id", "movie_title")


@dataclass(frozen=True)
class BuildReport:
    """What :func:`build_movielens` did (counts for the log and the CLI's ``stats``)."""

    num_users: int
    num_items: int
    num_interactions: int
    dropped_unknown_items: int
    dropped_low_rating: int
    num_samples: dict[str, int]


def _read_atomic(path: Path, required: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Read a RecBole atomic file; return the bare column names and the rows."""
    if not path.is_file():
        raise DataFormatError(f"RecBole file {str(path)!r} does not exist")
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            try:
                header = next(reader)
            except StopIteration:
                raise DataFormatError(f"{path}: the file is empty") from None
            names = [h.split(":", 1)[0] for h in header]
            missing = [c for c in required if c not in names]
            if missing:
                raise DataFormatError(
                    f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header)}"
                )
            need = max(names.index(c) for c in required) + 1
            rows = []
            for r in reader:
                if not r:
                    continue
                if len(r) < need:
                    raise DataFormatError(
                        f"{path}:{reader.line_num}: {len(r)} fields, expected at least {need} "
                        f"(columns {', '.join(header[:need])})"
                    )
                rows.append(r)
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except csv.Error as exc:
        raise DataFormatError(f"{path}: malformed file: {exc}") from None
    return names, rows


def read_recbole_items(path: str | os.PathLike[str], *, with_year: bool = True) -> dict[str, str]:
    """Map RecBole item tokens to display titles (``"Title (year)"`` when ``with_year``)."""
    names, rows = _read_atomic(Path(path), ITEM_COLUMNS)
    i_id, i_title = names.index("item_id"), names.index("movie_title")
    i_year = names.index("release_year") if "release_year" in names else -1
    titles: dict[str, str] = {}
    for r in rows:
        title = _clean_title(r[i_title])
        if with_year and i_year >= 0 and i_year < len(r) and r[i_year].strip():
            year = r[i_year].strip()
            if year.endswith(".0"):
                year = year[:-2]
            if not title.endswith(f"({year})"):
                title = f"{title} ({year})"
        if title:
            titles[r[i_id]] = title
    if not titles:
        raise DataFormatError(f"{path}: no items with a title")
    return titles


def make_samples(
    interactions: dict[str, list[tuple[float, int, int]]],
    item_titles: Sequence[str],
    *,
    max_history: int = 10,
) -> list[tuple[float, Sample]]:
    """Turn per-user ``(timestamp, order, item position)`` lists into (target time, sample) pairs.

    Each user's list is sorted by ``(timestamp, order)``; the item at position ``j >= 1`` is a
    target with history ``items[max(0, j - max_history) : j]``.
    """
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    out: list[tuple[float, Sample]] = []
    for user, events in interactions.items():
        events = sorted(events)
        items = [e[2] for e in events]
        for j in range(1, len(items)):
            hist = items[max(0, j - max_history) : j]
            out.append(
                (
                    events[j][0],
                    Sample(
                        user_id=user,
                        history_item_title=[item_titles[h] for h in hist],
                        item_title=item_titles[items[j]],
                        history_item_id=list(hist),
                        item_id=items[j],
                        extra={"timestamp": str(int(events[j][0]))},
                    ),
                )
            )
    return out


def split_by_time(
    timed: list[tuple[float, Sample]], fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> dict[str, list[Sample]]:
    """Sort samples by target time (stable: user, then position) and cut them 80/10/10.

    ``n_train = floor(0.8 n)``, ``n_valid = floor(0.1 n)``, the rest is test.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    order = sorted(range(len(timed)), key=lambda k: (timed[k][0], k))
    n = len(order)
    n_train = int(n * fractions[0])
    n_valid = int(n * fractions[1])
    ordered = [timed[k][1] for k in order]
    return {
        "train": ordered[:n_train],
        "valid": ordered[n_train : n_train + n_valid],
        "test": ordered[n_train + n_valid :],
    }


def build_movielens(
    recbole_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    max_history: int = 10,
    min_rating: float | None = None,
    with_year: bool = True,
    max_users: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> BuildReport:
    """Build ``out_dir/{info.txt,train.csv,valid.csv,test.csv}`` from RecBole atomic files.

    Args:
        recbole_dir: folder with ``<name>.inter`` and ``<name>.item``.
        out_dir: the output folder, written atomically (temp dir, then rename).
        name: dataset name (default: the folder's name, e.g. ``ml-100k``).
        max_history: at most this many history items per sample.
        min_rating: keep only interactions rated at least this (default: keep all).
        with_year: append ``(year)`` to titles that lack it (disambiguates remakes).
        max_users: keep only the first ``max_users`` users (shortest ids first, then by id, i.e.
            numeric order for numeric ids) for quick runs.
        overwrite: replace an existing ``out_dir`` (only an earlier igdbeam ``prepare`` output:
            :func:`~igdbeam.data.write_dataset` never replaces a folder it did not write).
        progress: show tqdm progress bars.

    Catalog item ids are ``0 .. N-1`` in order of the ``.item`` file, restricted to items that
    occur in the kept interactions.
    """
    src = Path(recbole_dir)
    name = name or src.name
    titles_by_token = read_recbole_items(src / f"{name}.item", with_year=with_year)
    names, rows = _read_atomic(src / f"{name}.inter", INTER_COLUMNS)
    i_user, i_item, i_ts = (names.index(c) for c in INTER_COLUMNS)
    i_rating = names.index("rating") if "rating" in names else -1
    if min_rating is not None and i_rating < 0:
        raise DataFormatError(f"{src / (name + '.inter')}: min_rating needs a rating column")
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    if max_users is not None and max_users < 1:
        raise ValueError(f"max_users must be >= 1, got {max_users}")
    inter = src / f"{name}.inter"
    per_user: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    unknown = low = 0
    for order, r in enumerate(tqdm(rows, desc=f"reading {name}", disable=not progress, unit="row")):
        item = r[i_item]
        if item not in titles_by_token:
            unknown += 1
            continue
        if min_rating is not None:
            if i_rating >= len(r):
                raise DataFormatError(f"{inter}: data row {order + 1} has no rating")
            try:
                rating = float(r[i_rating])
            except ValueError:
                raise DataFormatError(
                    f"{inter}: data row {order + 1}: rating {r[i_rating][:40]!r} is not a number"
                ) from None
            if rating < min_rating:
                low += 1
                continue
        try:
            ts = float(r[i_ts])
        except ValueError:
            ts = math.nan
        if not math.isfinite(ts):
            raise DataFormatError(
                f"{inter}: data row {order + 1}: timestamp {r[i_ts][:40]!r} is not a finite number"
            )
        per_user[r[i_user]].append((ts, order, item))
    if max_users is not None:
        keep = sorted(per_user, key=lambda u: (len(u), u))[:max_users]
        per_user = defaultdict(list, {u: per_user[u] for u in keep})
    used = {e[2] for events in per_user.values() for e in events}
    tokens = [t for t in titles_by_token if t in used]
    position = {t: k for k, t in enumerate(tokens)}
    catalog = Catalog([titles_by_token[t] for t in tokens], list(range(len(tokens))))
    interactions = {
        u: [(ts, o, position[t]) for ts, o, t in events] for u, events in per_user.items()
    }
    timed = make_samples(interactions, catalog.titles, max_history=max_history)
    if not timed:
        raise DataFormatError(f"{src}: no user has two or more interactions; nothing to build")
    splits = split_by_time(timed)
    write_dataset(out_dir, catalog, splits, overwrite=overwrite)
    return BuildReport(
        num_users=len(per_user),
        num_items=len(catalog),
        num_interactions=sum(len(v) for v in per_user.values()),
        dropped_unknown_items=unknown,
        dropped_low_rating=low,
        num_samples={k: len(v) for k, v in splits.items()},
    )
