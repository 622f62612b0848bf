"""Another experiment folder as a source (``igdbeam experiment --models-from``): the check that
its fine-tunes were trained with this experiment's training settings, and its decoded lists
read back onto this experiment's rows (to compare two decodes of the same models)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from igdbeam.app.experiment_profiles import TRAINING_FIELDS

# Decoding settings two decodes of the same fine-tunes must share to be compared list by list.
DECODING_FIELDS = ("alpha", "num_beams", "exclude_history", "methods", "beta")


def source_settings(folder: Path) -> dict[str, Any]:
    """The source folder's ``experiment.json``; ValueError when there is none."""
    path = folder / "experiment.json"
    if not path.exists():
        raise ValueError(f"--models-from {folder}: no experiment.json there")
    return dict(json.loads(path.read_text()))


def check_same_training(folder: Path, mine: Mapping[str, Any]) -> None:
    """Refuse a source whose fine-tunes were trained with other settings than ``mine`` (this
    experiment's settings, as written to ``experiment.json``): every :data:`TRAINING_FIELDS`
    field of the profile, the dataset and the base model must be equal."""
    theirs = source_settings(folder)
    prof = mine["profile"]
    diff = [f for f in TRAINING_FIELDS if theirs["profile"].get(f, prof[f]) != prof[f]]
    diff += [k for k in ("dataset", "data_dir", "model") if theirs.get(k) != mine[k]]
    if diff:
        raise ValueError(
            f"--models-from {folder}: its fine-tunes were trained with other settings "
            f"({', '.join(diff)}); use the same ones"
        )


def _row_key(row: Any) -> tuple[Any, ...]:
    return row.user_id, row.item_id, tuple(row.history_item_id)


def source_lists(
    folder: Path,
    source_test_rows: int | None,
    test_split: Sequence[Any],
    rows: Sequence[Any],
    runs: Mapping[str, Sequence[str]],
    width: int,
) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray]:
    """The lists the source folder decoded for ``rows`` (this experiment's test rows).

    The source's row order is rebuilt from its recorded ``test_rows`` (None: the split's order;
    N: :func:`~igdbeam.app.pipeline.select_test_rows`); rows are matched by user, target and
    history. Runs the source has not decoded at all are left out.

    Args:
        folder: the source experiment folder.
        source_test_rows: the ``test_rows`` its ``experiment.json`` records.
        test_split: the whole test split (the rows both orders are drawn from).
        rows: this experiment's rows, in its order.
        runs: ``{run name: decodings}`` to read.
        width: list length (beams) of the arrays returned.

    Returns:
        ``({run: {decoding: [len(rows), width]}}, index)``: ``index`` holds the positions of
        the rows that every returned run decoded, in ``rows``.
    """
    from igdbeam.app.pipeline import select_test_rows

    split = list(test_split)
    order = split if source_test_rows is None else select_test_rows(split, source_test_rows)
    where = {_row_key(row): i for i, row in enumerate(order)}
    index = np.asarray([where.get(_row_key(row), -1) for row in rows], dtype=np.int64)
    known = index >= 0
    lists: dict[str, dict[str, np.ndarray]] = {}
    for run, methods in runs.items():
        got = {m: np.full((len(order), width), -1, dtype=np.int64) for m in methods}
        done = np.zeros(len(order), dtype=bool)
        for path in sorted((folder / "decodes" / run).glob("chunk-*.json")):
            chunk = json.loads(path.read_text())
            if not all(m in chunk["item_ids"] for m in methods):
                continue
            start, end = chunk["rows"]
            for m in methods:
                got[m][start:end] = np.asarray(chunk["item_ids"][m], dtype=np.int64)[:, :width]
            done[start:end] = True
        if done.any():
            known &= np.where(index >= 0, done[index.clip(min=0)], False)
            lists[run] = got
    picked = np.flatnonzero(known)
    return {
        run: {m: a[index[picked]] for m, a in got.items()} for run, got in lists.items()
    }, picked
