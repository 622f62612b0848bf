"""SASRec (RecTools) as a baseline: training sequences, cache key, and a smoke run on a tiny
dataset (trains, returns catalog ids, excludes what it is told to, is deterministic under a seed,
is read back from its cache). The RecTools tests skip cleanly without RecTools."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pytest

from igdbeam.data import Catalog, Sample
from igdbeam.evaluation import sasrec

needs_rectools = pytest.mark.skipif(
    not sasrec.rectools_available(), reason='needs RecTools: pip install "igdbeam[baselines]"'
)
NUM_ITEMS = 12
TINY = sasrec.SASRecSettings(
    epochs=15, n_factors=16, n_blocks=1, n_heads=1, dropout=0.0, session_max_len=8, lr=1e-2
)


def _catalog() -> Catalog:
    return Catalog([f"Movie {i}" for i in range(NUM_ITEMS)], [100 + i for i in range(NUM_ITEMS)])


def _rows(user: str, seq: list[int], start: int = 0, window: int = 3) -> list[Sample]:
    """Sliding-window rows over ``seq`` (catalog positions), as the MovieLens builder writes."""
    out = []
    for j in range(max(1, start), len(seq)):
        hist = seq[max(0, j - window) : j]
        out.append(
            Sample(
                user_id=user,
                history_item_title=[f"Movie {h}" for h in hist],
                item_title=f"Movie {seq[j]}",
                history_item_id=[100 + h for h in hist],
                item_id=100 + seq[j],
                extra={"timestamp": str(1000 * int(user[1:]) + j)},
            )
        )
    return out


def _cycle(user: int, length: int) -> list[int]:
    """Item i is always followed by item i + 1 (mod NUM_ITEMS): a pattern SASRec must learn."""
    return [(user + j) % NUM_ITEMS for j in range(length)]


def test_training_sequences_rebuild_each_users_interactions() -> None:
    seq0, seq1 = [3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8]
    rows = _rows("u1", seq1) + _rows("u0", seq0)
    rows = rows[::-1]  # file order scrambled: the timestamps put them back
    assert sasrec.training_sequences(rows, _catalog()) == {"u0": seq0, "u1": seq1}
    # Without timestamps, file order; items missing from the catalog are skipped.
    plain = [replace(r, extra={}) for r in _rows("u2", [0, 1, 2])]
    plain.append(replace(plain[-1], item_id=999))
    assert sasrec.training_sequences(plain, _catalog()) == {"u2": [0, 1, 2]}


def test_fingerprint_covers_what_the_lists_depend_on() -> None:
    train, test = _rows("u0", _cycle(0, 8)), _rows("u1", _cycle(1, 5))
    base = dict(k=10, exclude=None, candidates=None, settings=TINY)
    key = sasrec.fingerprint(train, test, **base)
    assert key == sasrec.fingerprint(list(train), list(test), **base) and len(key) == 16
    others = [
        sasrec.fingerprint(train, test, **{**base, "k": 5}),
        sasrec.fingerprint(train, test, **{**base, "exclude": [[1]] * len(test)}),
        sasrec.fingerprint(train, test, **{**base, "candidates": np.arange(3)}),
        sasrec.fingerprint(train, test, **{**base, "settings": replace(TINY, seed=1)}),
        sasrec.fingerprint(train, test[:-1], **base),
        sasrec.fingerprint(train[1:], test, **base),
    ]
    assert len({key, *others}) == 7


@needs_rectools
@pytest.mark.slow  # about 15-25 s on 2 busy cores: three tiny trainings
def test_sasrec_trains_excludes_and_is_deterministic(tmp_path, monkeypatch) -> None:
    catalog = _catalog()
    train = [r for u in range(24) for r in _rows(f"u{u}", _cycle(u, 10))]
    test = [r for u in range(6) for r in _rows(f"u{u + 50}", _cycle(u, 5), start=4)]
    hist = [[catalog.position(h) for h in r.history_item_id] for r in test]
    nxt = [catalog.position(r.item_id) for r in test]
    cand = np.arange(1, NUM_ITEMS)  # item 0 may never be recommended
    first = sasrec.sasrec_recommendations(
        train, test, catalog, k=5, candidates=cand, settings=TINY, cache_dir=tmp_path
    )
    ids = first.item_ids
    assert ids.shape == (len(test), 5) and not first.from_cache and first.train_seconds > 0
    assert set(ids.ravel().tolist()) <= set(cand.tolist())  # valid catalog ids, all candidates
    # It learned the cycle: the next item is at the top for most rows (chance: 1 in 11).
    top1 = np.mean([row[0] == t for row, t in zip(ids, nxt, strict=True)])
    assert top1 >= 0.5, ids

    # The same seed trains the same model: identical lists (no cache here).
    again = sasrec.sasrec_recommendations(train, test, catalog, k=5, candidates=cand, settings=TINY)
    assert np.array_equal(again.item_ids, ids)

    # Excluding each row's history: none of its items appear, the rest keep their order.
    ex = sasrec.sasrec_recommendations(
        train, test, catalog, k=5, exclude=hist, candidates=cand, settings=TINY
    )
    for row, h, full in zip(ex.item_ids, hist, ids, strict=True):
        assert not set(row.tolist()) & set(h) and (row >= 0).all()
        kept = [i for i in full if i not in h]
        assert row[: len(kept)].tolist() == kept

    # The cache: read back without training.
    def no_training(*args, **kwargs):
        raise AssertionError("SASRec was trained again")

    monkeypatch.setattr(sasrec, "fit_sasrec", no_training)
    cached = sasrec.sasrec_recommendations(
        train, test, catalog, k=5, candidates=cand, settings=TINY, cache_dir=tmp_path
    )
    assert cached.from_cache and np.array_equal(cached.item_ids, ids)
    assert cached.train_seconds == pytest.approx(first.train_seconds)
    assert cached.path is not None and cached.path.parent == tmp_path


def test_without_rectools_a_cache_still_serves_and_training_says_what_to_install(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(sasrec, "rectools_available", lambda: False)
    catalog = _catalog()
    train, test = _rows("u0", _cycle(0, 8)), _rows("u1", _cycle(1, 4))
    with pytest.raises(ImportError, match=r"igdbeam\[baselines\]"):
        sasrec.sasrec_recommendations(train, test, catalog, k=3, settings=TINY, cache_dir=tmp_path)
    key = sasrec.fingerprint(train, test, k=3, exclude=None, candidates=None, settings=TINY)
    from igdbeam.io import write_json

    lists = [[1, 2, 3]] * len(test)
    write_json(
        tmp_path / f"sasrec-{key}.json",
        {
            "item_ids": lists,
            "train_seconds": 1.5,
            "recommend_seconds": 0.1,
            "settings": {"epochs": 15},
            "unscored_rows": 0,
        },
    )
    res = sasrec.sasrec_recommendations(
        train, test, catalog, k=3, settings=TINY, cache_dir=tmp_path
    )
    assert res.from_cache and res.item_ids.tolist() == lists and res.train_seconds == 1.5


def test_a_cache_of_more_rows_serves_any_of_its_rows(tmp_path, monkeypatch) -> None:
    """A report of the rows decoded so far reads SASRec's lists out of the whole split's cache."""
    monkeypatch.setattr(sasrec, "rectools_available", lambda: False)
    catalog = _catalog()
    train = _rows("u0", _cycle(0, 8))
    test = _rows("u1", _cycle(1, 6)) + _rows("u2", _cycle(2, 5))
    exclude = [[i % NUM_ITEMS] for i in range(len(test))]
    base = sasrec.base_fingerprint(train, k=3, exclude_given=True, candidates=None, settings=TINY)
    lists = [[r, r + 1, -1 if r == 2 else r + 2] for r in range(len(test))]
    lists[4] = [-1, -1, -1]  # a row SASRec could not score
    from igdbeam.io import write_json

    write_json(
        tmp_path / "sasrec-0000000000000000.json",
        {
            "item_ids": lists,
            "train_seconds": 2.0,
            "recommend_seconds": 0.3,
            "settings": {"epochs": 15},
            "unscored_rows": 1,
            "base_key": base,
            "row_keys": sasrec.row_keys(test, exclude),
        },
    )
    pick = [4, 0, 2]
    res = sasrec.sasrec_recommendations(
        train,
        [test[i] for i in pick],
        catalog,
        k=3,
        exclude=[exclude[i] for i in pick],
        settings=TINY,
        cache_dir=tmp_path,
    )
    assert res.from_cache and res.item_ids.tolist() == [lists[i] for i in pick]
    assert res.unscored_rows == 1 and res.train_seconds == 2.0
    # Another exclusion for a row, or no exclusion at all: not the cached lists.
    for other in ([[5], exclude[0], exclude[2]], None):
        with pytest.raises(ImportError):
            sasrec.sasrec_recommendations(
                train,
                [test[i] for i in pick],
                catalog,
                k=3,
                exclude=other,
                settings=TINY,
                cache_dir=tmp_path,
            )


def test_report_note_says_the_lists_were_cut_from_a_larger_cache(tmp_path, monkeypatch) -> None:
    from igdbeam.evaluation.report import sasrec_lists
    from igdbeam.io import write_json

    monkeypatch.setattr(sasrec, "rectools_available", lambda: False)
    train = _rows("u0", _cycle(0, 8))
    test = _rows("u1", _cycle(1, 6))
    trie = type("Trie", (), {"num_items": NUM_ITEMS})()
    monkeypatch.setattr("igdbeam.evaluation.report.trie_items", lambda trie: np.arange(NUM_ITEMS))
    cand = np.arange(NUM_ITEMS)
    settings = {
        **asdict(TINY),
        "train_rows": 7,
        "train_sequences": 1,
        "train_interactions": 8,
        "test_rows": len(test),
        "threads": 1,
    }
    write_json(
        tmp_path / "sasrec-1111111111111111.json",
        {
            "item_ids": [[1] * 10] * len(test),
            "train_seconds": 3.0,
            "recommend_seconds": 0.5,
            "settings": settings,
            "unscored_rows": 0,
            "base_key": sasrec.base_fingerprint(
                train, k=10, exclude_given=False, candidates=cand, settings=TINY
            ),
            "row_keys": sasrec.row_keys(test, None),
        },
    )
    lists, info = sasrec_lists(
        True, train, test[:2], _catalog(), trie, exclude=None, cache_dir=tmp_path, settings=TINY
    )
    assert lists is not None and lists.shape == (2, 10)
    assert f"0.5 s to score its {len(test)} rows" in info["note"]
    assert "these 2 rows cut from `sasrec-1111111111111111.json`" in info["note"]
