"""A row's prior items (what history exclusion removes): the user's whole history before the
target, rebuilt across splits, checked by hand and against MovieLens' raw ratings."""

from __future__ import annotations

from pathlib import Path

import pytest

from igdbeam.data.bigrec_csv import Catalog, Dataset, Sample
from igdbeam.data.user_history import prior_item_ids


def _row(user: str, history: list[int], target: int, ts: int | None) -> Sample:
    extra = {} if ts is None else {"timestamp": str(ts)}
    return Sample(user, [f"t{i}" for i in history], f"t{target}", history, target, extra)


def test_hand_built_sequences() -> None:
    # User a rated 1, 2, 3, 4, 5, 6 in that order; rows keep a 2-item history. The splits hold
    # the rows out of order (test before train in the file), which the timestamps undo.
    a1, a2 = _row("a", [1, 2], 3, 10), _row("a", [2, 3], 4, 20)
    a3, a4 = _row("a", [3, 4], 5, 30), _row("a", [4, 5], 6, 40)
    b1, b2 = _row("b", [7], 8, 5), _row("b", [8], 9, 6)
    ds = Dataset(Catalog.__new__(Catalog), {"test": [a4, b2], "valid": [a3], "train": [b1, a2, a1]})
    got = prior_item_ids(ds, [a4, a3, a1, b2, b1])
    assert got == [[1, 2, 3, 4, 5], [1, 2, 3, 4], [1, 2], [7, 8], [7]]
    # Rows from another load of the same data are matched by content.
    copy = _row("a", [4, 5], 6, 40)
    assert prior_item_ids(ds, [copy]) == [[1, 2, 3, 4, 5]]
    # A row the dataset does not hold gets its own history.
    assert prior_item_ids(ds, [_row("c", [11, 10], 12, 1)]) == [[10, 11]]


def test_ties_fall_back_to_split_then_file_order() -> None:
    r1, r2 = _row("u", [1], 2, None), _row("u", [2], 3, None)
    ds = Dataset(Catalog.__new__(Catalog), {"train": [r1], "test": [r2]})
    assert prior_item_ids(ds, [r2, r1]) == [[1, 2], [1]]


@pytest.mark.assets
@pytest.mark.slow
def test_movielens_prior_items_are_the_raw_ratings_before_the_target() -> None:
    """Every ML-100k test row: all items rated strictly before the target's time are excluded,
    nothing rated after it is, and the target never is (no user rates a movie twice)."""
    from igdbeam.app.assets import asset_path
    from igdbeam.app.pipeline import prepare_movielens
    from igdbeam.data import load_dataset

    ds = load_dataset(prepare_movielens("ml-100k", progress=False))
    test = ds.split("test")
    prior = prior_item_ids(ds, test)
    ratings: dict[str, list[tuple[int, int]]] = {}
    lines = (Path(asset_path("ml-100k")) / "ml-100k.inter").read_text().splitlines()
    for line in lines[1:]:
        user, item, _, ts = line.split("\t")
        ratings.setdefault(user, []).append((int(float(ts)), int(item) - 1))  # info.txt: id - 1
    for row, items in zip(test, prior, strict=True):
        t = int(row.extra["timestamp"])
        before = {i for ts, i in ratings[row.user_id] if ts < t}
        up_to = {i for ts, i in ratings[row.user_id] if ts <= t} - {row.item_id}
        assert before <= set(items) <= up_to
        assert row.item_id not in items
    assert sum(map(len, prior)) / len(prior) > 100  # ~125 items a row, not the 10 of the prompt
