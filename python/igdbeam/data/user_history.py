"""Everything a user rated before a row's target, rebuilt from the splits.

A BIGRec-format row keeps only the newest items of its user's history (10 in the MovieLens
folders igdbeam prepares). History exclusion must know more: MovieLens users never rate a movie
twice, so any movie the user rated before the target, not only the ten in the prompt, can never
be the target. :func:`prior_item_ids` rebuilds that set from the loaded splits: a user's rows, in
time order over every split, are ``history + target`` windows of one sequence, so the items
before a row's target are its own history plus the targets of the user's earlier rows (and the
history of the user's first row).
"""

from __future__ import annotations

from collections.abc import Sequence

from igdbeam.data.bigrec_csv import Dataset, Sample

__all__ = ["prior_item_ids"]

SPLIT_ORDER = ("train", "valid", "test")


def _timestamp(row: Sample) -> int:
    raw = row.extra.get("timestamp")
    try:
        return int(raw) if raw is not None else -1
    except ValueError:
        return -1


def _key(row: Sample) -> tuple[object, ...]:
    return (row.user_id, _timestamp(row), row.item_id, tuple(row.history_item_id))


def prior_item_ids(dataset: Dataset, rows: Sequence[Sample]) -> list[list[int]]:
    """Per row, the ids of every item its user interacted with before the row's target.

    The user's rows of every loaded split are ordered by timestamp (then train < valid < test,
    then file order); a row's prior items are its own history, the history of the user's first
    row, and the targets of the user's rows before it. Rows are matched by content (user,
    timestamp, target, history), so they may come from another load of the same folder; a row
    that is in none of the splits (built by hand) gets its own history. Ids come out sorted.

    Args:
        dataset: the loaded splits (load train, valid and test for the whole history).
        rows: rows of those splits, e.g. the test rows being evaluated.
    """
    ordered: dict[str, list[tuple[int, int, int, Sample]]] = {}
    names = sorted(dataset.splits, key=lambda n: (SPLIT_ORDER + (n,)).index(n))
    for rank, name in enumerate(names):
        for k, row in enumerate(dataset.splits[name]):
            ordered.setdefault(row.user_id, []).append((_timestamp(row), rank, k, row))
    prior_of: dict[tuple[object, ...], frozenset[int]] = {}
    for seq in ordered.values():
        seq.sort(key=lambda t: t[:3])
        seen = set(seq[0][3].history_item_id)
        for *_, row in seq:
            prior_of[_key(row)] = frozenset(seen | set(row.history_item_id))
            seen.add(row.item_id)
    return [sorted(prior_of.get(_key(row), frozenset(row.history_item_id))) for row in rows]
