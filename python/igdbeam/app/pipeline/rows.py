"""Which rows and settings a run decodes, and the table of its recommendations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from igdbeam.app.pipeline.recommending import Recommendations
from igdbeam.data.bigrec_csv import Dataset, Sample

METHODS: dict[str, dict[str, float]] = {
    # name: decoding settings (spec section 4); "igd" gets its alpha from the caller.
    "bigrec": {"alpha": 0.0, "length_penalty": 1.0},
    "d3": {"alpha": 0.0, "length_penalty": 0.0},
    "igd": {"alpha": 0.2, "length_penalty": 0.0},
}


def select_test_users(
    samples: Sequence[Sample], num_users: int | None, seed: int = 0
) -> list[Sample]:
    """One test row per user (the user's last one), then a seeded sample of ``num_users`` users.

    The users come in a seeded random order, so every prefix of the result is a random sample
    too. ``num_users=None`` keeps every row of the split in file order (the full evaluation).
    """
    if num_users is None:
        return list(samples)
    last: dict[str, Sample] = {}
    for s in samples:
        last[s.user_id] = s
    rng = np.random.default_rng(seed)
    users = [str(u) for u in rng.permutation(sorted(last))[:num_users]]
    return [last[u] for u in users]


def select_test_rows(samples: Sequence[Sample], num_rows: int, seed: int = 0) -> list[Sample]:
    """A seeded sample of ``num_rows`` test rows (a user's next item each), users spread first.

    The order is: every user's last row (users in seeded random order, as
    :func:`select_test_users`), then all other rows in seeded random order. So every prefix is a
    random sample: of distinct users while it is no longer than the number of users (a
    time-based split leaves few users in the test split: 166 in MovieLens-100k), then of test
    rows, as the papers' full evaluation counts them.
    """
    users = select_test_users(samples, len(samples), seed)  # every user's last row
    first = {id(s) for s in users}
    rest = [s for s in samples if id(s) not in first]
    order = np.random.default_rng(seed + 1).permutation(len(rest))
    return (users + [rest[i] for i in order])[: max(0, int(num_rows))]


def recommendations_table(
    dataset: Dataset, samples: Sequence[Sample], recs: Recommendations, top: int = 10
) -> list[dict[str, Any]]:
    """Rows for a CSV: user, target, and the top-``top`` titles / item ids / scores."""
    titles = dataset.catalog.titles
    ids = dataset.catalog.ids
    rows = []
    for s, items, scores in zip(samples, recs.item_ids, recs.scores, strict=True):
        for rank, (item, score) in enumerate(zip(items[:top], scores[:top], strict=True)):
            if item < 0:
                continue
            rows.append(
                {
                    "user_id": s.user_id,
                    "rank": rank + 1,
                    "item_id": ids[int(item)],
                    "item_title": titles[int(item)],
                    "score": float(score),
                    "target_item_id": s.item_id,
                    "hit": int(ids[int(item)] == s.item_id),
                }
            )
    return rows
