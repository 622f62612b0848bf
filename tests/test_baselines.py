"""Most-popular baselines against hand-computed lists, and the report's baseline rows, header,
paired differences and legend on a tiny dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from factories.data import write_tiny_data
from igdbeam import ItemTrie
from igdbeam.data import load_dataset
from igdbeam.data.bigrec_csv import target_positions
from igdbeam.evaluation.baselines import (
    MOST_POPULAR,
    MOST_POPULAR_UNSEEN,
    most_popular,
    popularity_baselines,
    popularity_order,
    trie_items,
)
from igdbeam.evaluation.metrics import ranking_metrics

# Items 0..5 seen 5, 9, 9, 0, 3, 7 times as training targets: by count, ties by id,
# the order is 1 (9), 2 (9), 5 (7), 0 (5), 4 (3), 3 (0).
POP = np.array([5, 9, 9, 0, 3, 7], dtype=np.float64)


def test_popularity_order_hand_computed() -> None:
    assert popularity_order(POP).tolist() == [1, 2, 5, 0, 4, 3]
    assert popularity_order(POP, candidates=[4, 0, 3, 2]).tolist() == [2, 0, 4, 3]
    with pytest.raises(ValueError, match="outside 0..5"):
        popularity_order(POP, candidates=[6])


def test_most_popular_hand_computed() -> None:
    assert most_popular(POP, 2, k=3).tolist() == [[1, 2, 5], [1, 2, 5]]
    # Row 0 has seen 2, row 1 has seen 1 and 5, row 2 nothing.
    out = most_popular(POP, 3, k=3, exclude=[[2], [1, 5], []])
    assert out.tolist() == [[1, 5, 0], [2, 0, 4], [1, 2, 5]]
    # Restricted to candidates; empty slots when too few remain.
    assert most_popular(POP, 1, k=3, candidates=[3, 4]).tolist() == [[4, 3, -1]]
    assert most_popular(POP, 1, k=3, exclude=[[4]], candidates=[3, 4]).tolist() == [[3, -1, -1]]
    with pytest.raises(ValueError, match="exclude has 1 rows for 2 rows"):
        most_popular(POP, 2, exclude=[[1]])
    both = popularity_baselines(POP, [[1], [2, 5]], k=2)
    assert both[MOST_POPULAR].tolist() == [[1, 2], [1, 2]]
    assert both[MOST_POPULAR_UNSEEN].tolist() == [[2, 5], [1, 0]]


def test_trie_items_are_the_items_with_a_leaf() -> None:
    class FakeTrie:
        def array(self, name: str) -> torch.Tensor:
            assert name == "item_leaf"
            return torch.tensor([-1, 7, -1, 9, 4])

    assert trie_items(FakeTrie()).tolist() == [1, 3, 4]
    trie = ItemTrie.from_token_ids([[3, 2], [4, 2], [5, 2]])
    assert trie_items(trie).tolist() == [0, 1, 2]


@pytest.fixture
def tiny(tmp_path: Path) -> dict:
    ds = load_dataset(write_tiny_data(tmp_path / "data", users=8, per_user=6))
    trie = ItemTrie.from_token_ids([[3 + i, 2] for i in range(len(ds.catalog))])
    return {"ds": ds, "trie": trie, "rows": ds.split("test") + ds.split("valid")}


def test_report_puts_the_baselines_next_to_the_cells(tiny) -> None:
    from igdbeam.evaluation.report import evaluation_report

    ds, trie, rows = tiny["ds"], tiny["trie"], tiny["rows"]
    targets = target_positions(ds, rows)
    rng = np.random.default_rng(0)
    ranked = np.stack([rng.permutation(10)[:5] for _ in rows])
    ranked[::2, 0] = targets[::2]  # hits on half the rows
    out = evaluation_report(
        {"d3": ranked, "igd": ranked[:, ::-1].copy()},
        rows,
        ds,
        trie,
        exclude_history=False,
        num_resamples=200,
        title="## tiny",
    )
    cells = {r["label"]: r for r in out["results"]}
    assert list(cells) == [
        "D3 (lp 0)",
        "D3 + IGD",
        "most-popular",
        "most-popular, history excluded",
    ]
    # The baselines' values, recomputed from hand-built lists.
    pop = np.bincount(target_positions(ds, ds.split("train")), minlength=10)
    order = sorted(range(10), key=lambda i: (-pop[i], i))
    mp = np.asarray([order[:10]] * len(rows))
    hist = [[ds.catalog.position(h) for h in r.history_item_id] for r in rows]
    unseen = np.asarray([([i for i in order if i not in h] + [-1] * 10)[:10] for h in hist])
    for label, lists in (("most-popular", mp), ("most-popular, history excluded", unseen)):
        ref = ranking_metrics(lists, targets, ks=(10,))
        assert cells[label]["metrics"]["NDCG@10"]["value"] == pytest.approx(ref["NDCG@10"])
        assert cells[label]["kind"] == "baseline"
    # Paired differences against D3 and each baseline, with their MDE.
    igd = cells["D3 + IGD"]
    assert set(igd["vs"]) == {"d3", "most-popular", "most-popular-unseen"}
    for ref_id, ref_label in (
        ("d3", "D3 (lp 0)"),
        ("most-popular-unseen", "most-popular, history excluded"),
    ):
        d = igd["vs"][ref_id]["NDCG@10"]
        want = igd["metrics"]["NDCG@10"]["value"] - cells[ref_label]["metrics"]["NDCG@10"]["value"]
        assert d["value"] == pytest.approx(want)
        assert d["mde"] == pytest.approx(2.8016 * d["se"], rel=1e-4)
    assert igd["vs_baseline"] == igd["vs"]["d3"]
    # The header and the legend.
    info, md = out["evaluation"], out["markdown"]
    users = len({r.user_id for r in rows})
    assert (info["rows"], info["users"], info["history_excluded"]) == (len(rows), users, False)
    assert f"**{len(rows)} test rows from {users} users**" in md
    assert "history **not excluded**" in md and "user-clustered" in md
    assert "**coverage**" in md and "**mean pop.**" in md and "MDE" in md
    assert "#### vs most-popular, history excluded" in md
    assert "SASRec: not run (turned off)." in md
    assert md.startswith("## tiny")


def test_report_with_history_excluded(tiny) -> None:
    from igdbeam.evaluation.report import evaluation_report

    ds, trie, rows = tiny["ds"], tiny["trie"], tiny["rows"]
    ranked = np.zeros((len(rows), 3), dtype=np.int64)
    own = [[5, 6]] * len(rows)  # the caller's own notion of history: items 5 and 6
    out = evaluation_report(
        {("plain", "d3"): [ranked, ranked]},
        rows,
        ds,
        trie,
        exclude_history=True,
        history=own,
        num_resamples=50,
    )
    cells = {(r["loss"], r["decoding"]): r for r in out["results"]}
    assert cells[("plain", "d3")]["seeds"] == 2 and "vs_baseline" not in cells[("plain", "d3")]
    assert "history **excluded**" in out["markdown"]
    assert out["evaluation"]["history_items_per_row"] == 2.0
    pop = np.bincount(target_positions(ds, ds.split("train")), minlength=10).astype(float)
    want = most_popular(pop, len(rows), exclude=own)
    got = cells[("baseline", MOST_POPULAR_UNSEEN)]["metrics"]["HR@10"]["value"]
    assert got == pytest.approx(ranking_metrics(want, target_positions(ds, rows))["HR@10"])
    with pytest.raises(ValueError, match="history has 1 rows"):
        evaluation_report({"d3": ranked}, rows, ds, trie, exclude_history=True, history=[[1]])
