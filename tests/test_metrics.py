"""NDCG / HR and diversity metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from igdbeam import ItemTrie
from igdbeam.evaluation.metrics import (
    diversity_metrics,
    evaluate_recommendations,
    first_tokens,
    hit_ranks,
    ranking_metrics,
)


def test_ndcg_hr_hand_computed() -> None:
    ranked = [[5, 3, 9], [1, 2, 4], [7, 8, 6], [0, -1, -1]]
    targets = [3, 4, 1, 0]
    assert hit_ranks(ranked, targets).tolist() == [1, 2, -1, 0]
    m = ranking_metrics(ranked, targets, ks=(1, 2, 3, 20))
    # user 0: rank 1 -> 1/log2(3); user 1: rank 2 -> 1/log2(4) = 0.5; user 3: rank 0 -> 1.
    assert m["HR@1"] == pytest.approx(1 / 4)
    assert m["NDCG@1"] == pytest.approx(1 / 4)
    assert m["HR@2"] == pytest.approx(2 / 4)
    assert m["NDCG@2"] == pytest.approx((1 / math.log2(3) + 1) / 4)
    assert m["HR@3"] == pytest.approx(3 / 4)
    assert m["NDCG@3"] == pytest.approx((1 / math.log2(3) + 0.5 + 1) / 4)
    assert m["HR@20"] == m["HR@3"] and m["NDCG@20"] == m["NDCG@3"]
    assert list(m) == ["NDCG@1", "HR@1", "NDCG@2", "HR@2", "NDCG@3", "HR@3", "NDCG@20", "HR@20"]


def test_tensor_input_and_errors() -> None:
    m = ranking_metrics(torch.tensor([[2, 1]]), torch.tensor([1]), ks=(1, 2))
    assert m == {"NDCG@1": 0.0, "HR@1": 0.0, "NDCG@2": pytest.approx(1 / math.log2(3)), "HR@2": 1.0}
    with pytest.raises(ValueError, match="2 ranked lists but 1 targets"):
        ranking_metrics([[1], [2]], [1])
    with pytest.raises(ValueError, match="K must be positive"):
        ranking_metrics([[1]], [1], ks=(0,))


def _dup_trie() -> ItemTrie:
    # Items 1 and 2 are the same title (one leaf); 0 and 3 share the first token 10.
    return ItemTrie.from_token_ids([[10, 11, 2], [20, 2], [20, 2], [10, 12, 2]])


def test_match_through_trie_leaves() -> None:
    trie = _dup_trie()
    # Recommending item 1 when the truth is item 2 (same leaf) is a hit.
    assert hit_ranks([[0, 1]], [2]).tolist() == [-1]
    assert hit_ranks([[0, 1]], [2], trie).tolist() == [1]
    assert ranking_metrics([[0, 1]], [2], trie=trie, ks=(2,))["HR@2"] == 1.0


def test_diversity_hand_computed() -> None:
    trie = _dup_trie()
    ft = first_tokens(trie)
    assert ft.tolist() == [10, 20, 20, 10]
    ranked = np.array([[0, 3], [1, 0], [2, -1]])
    pop = np.array([5.0, 1.0, 1.0, 0.0])
    d = diversity_metrics(ranked, num_items=4, first_token=ft, popularity=pop, tail_fraction=0.5)
    assert d["coverage"] == pytest.approx(4 / 4)
    # Lists with >= 2 items: [0,3] same first token (10, 10), [1,0] differ -> 1/2.
    assert d["same_first_token_share"] == pytest.approx(0.5)
    # Top first-token share per list: 1, 1/2, 1 -> 5/6.
    assert d["mean_top_first_token_share"] == pytest.approx(5 / 6)
    # Recommended: 0,3,1,0,2 -> popularity 5,0,1,5,1 -> 12/5.
    assert d["mean_popularity"] == pytest.approx(12 / 5)
    # Head = the 2 most popular items (0 and 1 by stable order); tail items among 5: 3, 2 -> 2/5.
    assert d["tail_share"] == pytest.approx(2 / 5)
    assert d["mean_list_length"] == pytest.approx(5 / 3)
    assert diversity_metrics(ranked, num_items=4, k=1)["coverage"] == pytest.approx(3 / 4)


def test_evaluate_recommendations() -> None:
    trie = _dup_trie()
    out = evaluate_recommendations([[3, 0], [1, 2]], [0, 2], trie, ks=(1, 5))
    assert out["HR@1"] == pytest.approx(0.5) and out["HR@5"] == 1.0
    assert out["NDCG@5"] == pytest.approx((1 / math.log2(3) + 1) / 2)
    assert out["num_users"] == 2.0
    with pytest.raises(ValueError, match="item id is >= num_items"):
        diversity_metrics([[7]], num_items=4)
