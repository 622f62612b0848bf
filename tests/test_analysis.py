"""Zero-IG report and prefix entropy by step on the spec's worked example (section 5)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from igdbeam import ItemTrie
from igdbeam.evaluation.analysis import (
    entropy_curves,
    item_path_nodes,
    node_entropy,
    node_mass,
    plot_entropy_curves,
    plot_zero_ig_by_step,
    prefix_entropy_by_step,
    zero_ig_report,
)

# Spec section 5: A=[10,11,12,2] w=4, B=[10,11,13,2] w=2, C=[10,14,2] w=1, D=[20,21,2] w=1.
PATHS = [[10, 11, 12, 2], [10, 11, 13, 2], [10, 14, 2], [20, 21, 2]]
WEIGHTS = [4.0, 2.0, 1.0, 1.0]
H = {
    (10,): 0.953077,
    (20,): 0.259930,
    (10, 11): 0.693147,
    (10, 14): 0.259930,
    (20, 21): 0.259930,
    (10, 11, 12): 0.346574,
    (10, 11, 13): 0.346574,
}


@pytest.fixture(scope="module")
def trie() -> ItemTrie:
    return ItemTrie.from_token_ids(PATHS, WEIGHTS)


def test_item_path_nodes(trie: ItemTrie) -> None:
    nodes = item_path_nodes(trie)
    assert nodes.shape == (4, 4)
    tok = trie.token.numpy()
    for item, path in enumerate(PATHS):
        row = nodes[item]
        assert tok[row[: len(path)]].tolist() == path
        assert (row[len(path) :] == -1).all()


def test_prefix_entropy_by_step(trie: ItemTrie) -> None:
    mean, count = prefix_entropy_by_step(trie, [0, 2, 3, -1], mode="global")
    assert count.tolist() == [3, 3, 3, 1]
    # step 1: H(10), H(10), H(20); step 2: H(10,11), H(10,14), H(20,21);
    # step 3: H(10,11,12), H(leaf of C) = H(10,14), H(leaf of D) = H(20,21); step 4: leaf of A.
    exp = [
        (2 * H[(10,)] + H[(20,)]) / 3,
        (H[(10, 11)] + H[(10, 14)] + H[(20, 21)]) / 3,
        (H[(10, 11, 12)] + H[(10, 14)] + H[(20, 21)]) / 3,
        H[(10, 11, 12)],
    ]
    np.testing.assert_allclose(mean, exp, rtol=1e-5)
    mean, count = prefix_entropy_by_step(trie, [3], mode="global")
    assert count.tolist() == [1, 1, 1, 0] and math.isnan(mean[3])


def test_zero_ig_report(trie: ItemTrie) -> None:
    r = zero_ig_report(trie)
    # Zero-IG tokens: A,B: the EOS (1 of 4 each); C: EOS (1 of 3); D: 21 and EOS (2 of 3).
    assert r["zero_ig_token_share_uniform"] == pytest.approx(5 / 14)
    assert r["zero_ig_token_share"] == pytest.approx((4 + 2 + 1 + 2) / (16 + 8 + 3 + 3))
    # Step shares over items with a path that long: step 2: D's 21 only -> 1/4;
    # step 3: C's and D's EOS are zero-IG, A's 12 and B's 13 are not -> 2/4; step 4: 2/2.
    assert r["zero_ig_share_by_step"] == pytest.approx([0.0, 0.25, 0.5, 1.0])


def test_curves_and_plots(trie: ItemTrie, tmp_path: Path) -> None:
    curves = entropy_curves(trie, [0, 3], {"m": np.array([[3, 0], [3, 1]])}, mode="global")
    assert list(curves) == ["ground truth", "m"]
    assert curves["m"][0] == pytest.approx(H[(20,)])
    p1 = plot_entropy_curves(curves, tmp_path / "a" / "e.png")
    p2 = plot_zero_ig_by_step(zero_ig_report(trie), tmp_path / "z.png")
    for p in (p1, p2):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_conditional_entropy(trie: ItemTrie) -> None:
    mass = node_mass(trie)
    nodes = item_path_nodes(trie)
    # P(10,) = 7/8, P(10,11) = 6/8, P(20,) = 1/8; leaves: 4/8, 2/8, 1/8, 1/8.
    assert mass[0] == pytest.approx(1.0)
    assert mass[nodes[0, 0]] == pytest.approx(7 / 8)
    assert mass[nodes[0, 1]] == pytest.approx(6 / 8)
    assert mass[nodes[3, 0]] == pytest.approx(1 / 8)
    assert mass[nodes[0, 3]] == pytest.approx(4 / 8)
    ent = node_entropy(trie, "conditional")

    def h(*w: float) -> float:
        q = np.asarray(w) / sum(w)
        return float(-(q * np.log(q)).sum())

    assert ent[0] == pytest.approx(h(4, 2, 1, 1), rel=1e-5)
    assert ent[nodes[0, 0]] == pytest.approx(h(4, 2, 1), rel=1e-5)
    assert ent[nodes[0, 1]] == pytest.approx(h(4, 2), rel=1e-5)
    assert ent[nodes[3, 0]] == pytest.approx(0.0, abs=1e-6)  # only D below (20,)
    assert ent[nodes[0, 3]] == pytest.approx(0.0, abs=1e-6)
    mean, _ = prefix_entropy_by_step(trie, [0, 3])
    assert mean[0] == pytest.approx((h(4, 2, 1) + 0.0) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="mode must be"):
        node_entropy(trie, "other")
