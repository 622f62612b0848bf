"""The native ItemTrie against the spec's worked example and the pure-Python reference."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from factories.catalogs import EXAMPLE_PATHS, EXAMPLE_WEIGHTS
from igdbeam import ItemTrie, popularity_weights
from oracles.trie import ReferenceTrie


def node_of(trie: ItemTrie, prefix: tuple[int, ...]) -> int:
    if not prefix:
        return 0
    node = int(trie.walk([list(prefix)])[0])
    assert node >= 0, prefix
    return node


def test_worked_example_entropies(example_trie: ItemTrie) -> None:
    expected = {
        (): 1.213008,
        (10,): 0.953077,
        (20,): 0.259930,
        (10, 11): 0.693147,
        (10, 14): 0.259930,
        (20, 21): 0.259930,
        (10, 14, 2): 0.259930,
        (20, 21, 2): 0.259930,
        (10, 11, 12): 0.346574,
        (10, 11, 13): 0.346574,
        (10, 11, 12, 2): 0.346574,
        (10, 11, 13, 2): 0.346574,
    }
    assert example_trie.num_nodes == len(expected)
    for prefix, h in expected.items():
        assert float(example_trie.entropy[node_of(example_trie, prefix)]) == pytest.approx(
            h, abs=1e-6
        )


def test_worked_example_path_information_gain(example_trie: ItemTrie) -> None:
    a = [0.259930, 0.259930, 0.346574, 0.0]
    np.testing.assert_allclose(example_trie.path_information_gain(EXAMPLE_PATHS[0]), a, atol=1e-6)
    np.testing.assert_allclose(example_trie.path_information_gain(EXAMPLE_PATHS[1]), a, atol=1e-6)
    np.testing.assert_allclose(
        example_trie.path_information_gain(EXAMPLE_PATHS[2]), [0.259930, 0.693147, 0.0], atol=1e-6
    )
    np.testing.assert_allclose(
        example_trie.path_information_gain(EXAMPLE_PATHS[3]), [0.953077, 0.0, 0.0], atol=1e-6
    )


def test_worked_example_normalised_ig_and_zero_flags(example_trie: ItemTrie) -> None:
    norm = example_trie.info_gain_norm
    assert float(norm[node_of(example_trie, (10,))]) == 0.0
    assert float(norm[node_of(example_trie, (20,))]) == 1.0
    assert float(norm[node_of(example_trie, (10, 11))]) == 0.0
    assert float(norm[node_of(example_trie, (10, 14))]) == 1.0
    assert float(norm[node_of(example_trie, (10, 11, 12))]) == 0.0  # equal IG siblings
    assert float(norm[node_of(example_trie, (10, 11, 13))]) == 0.0
    zero = {
        p
        for p in ReferenceTrie(EXAMPLE_PATHS).prefixes()
        if p and bool(example_trie.zero_ig[node_of(example_trie, p)])
    }
    assert zero == {(20, 21), (10, 14, 2), (20, 21, 2), (10, 11, 12, 2), (10, 11, 13, 2)}


def test_csr_layout_is_breadth_first_and_sorted(example_trie: ItemTrie) -> None:
    off = example_trie.child_offsets.tolist()
    tok = example_trie.token.tolist()
    parent = example_trie.parent.tolist()
    depth = example_trie.depth.tolist()
    assert off[0] == 1 and off[-1] == example_trie.num_nodes
    assert depth == sorted(depth)
    for n in range(example_trie.num_nodes):
        kids = list(range(off[n], off[n + 1]))
        assert [tok[c] for c in kids] == sorted(tok[c] for c in kids)
        assert all(parent[c] == n and depth[c] == depth[n] + 1 for c in kids)
    tokens, nodes = example_trie.children(0)
    assert tokens.tolist() == [10, 20] and nodes.tolist() == [1, 2]
    assert example_trie.child_nodes.tolist() == list(range(1, example_trie.num_nodes))


def test_stats_zero_ig_share_weighted_by_items(example_trie: ItemTrie) -> None:
    s = example_trie.stats()
    # zero-IG tokens per path: A 1, B 1, C 1, D 2; lengths 4, 4, 3, 3; weights 4, 2, 1, 1.
    assert s["zero_ig_token_share"] == pytest.approx((4 + 2 + 1 + 2) / (16 + 8 + 3 + 3))
    assert s["zero_ig_token_share_uniform"] == pytest.approx(5 / 14)
    assert s["num_items"] == 4 and s["num_leaves"] == 4 and s["max_depth"] == 4
    assert s["nbytes"] == example_trie.nbytes and s["max_fanout"] == 2


def compare_with_reference(paths: list[list[int]], weights: list[float] | None, mode: str) -> None:
    trie = ItemTrie.from_token_ids(paths, weights, entropy=mode)
    ref = ReferenceTrie(paths, weights, entropy=mode)
    prefixes = ref.prefixes()
    assert trie.num_nodes == len(prefixes)
    assert trie.num_leaves == len(set(map(tuple, paths)))
    for prefix in prefixes:
        node = node_of(trie, prefix)
        assert float(trie.entropy[node]) == pytest.approx(ref.entropy(prefix), rel=1e-5, abs=1e-6)
        tokens, _ = trie.children(node)
        assert tokens.tolist() == ref.children[prefix]
        if prefix:
            parent, tok = prefix[:-1], prefix[-1]
            assert float(trie.info_gain[node]) == pytest.approx(
                ref.info_gain(parent, tok), rel=1e-5, abs=1e-6
            )
            assert bool(trie.zero_ig[node]) == ref.is_zero_ig(parent, tok)
            if ref.is_zero_ig(parent, tok):  # zero IG is exactly 0, not a float residue
                assert float(trie.info_gain[node]) == 0.0 == ref.info_gain(parent, tok)
                assert float(trie.info_gain_norm[node]) == 0.0
            assert float(trie.info_gain_norm[node]) == pytest.approx(
                ref.normalized_info_gain(parent, tok), abs=1e-5
            )
    for item, path in enumerate(paths):
        assert trie.item_path(item) == list(path)
        assert item in trie.items_of_node(node_of(trie, tuple(path)))


@st.composite
def catalogs(draw: st.DrawFn) -> tuple[list[list[int]], list[float] | None]:
    n = draw(st.integers(1, 25))
    body = st.lists(st.integers(3, 9), min_size=1, max_size=6)
    paths = [draw(body) + [2] for _ in range(n)]
    if draw(st.booleans()):
        paths.append(list(paths[0]))  # a duplicate title
    # Weights: uniform, positive, or with zeros (never-seen items, about half of them).
    weight = st.one_of(st.integers(1, 50), st.integers(0, 50), st.just(0))
    weights = draw(
        st.one_of(
            st.none(),
            st.lists(st.integers(1, 50), min_size=len(paths), max_size=len(paths)),
            st.lists(weight, min_size=len(paths), max_size=len(paths)),
        )
    )
    if weights is not None and sum(weights) == 0:
        weights[-1] = 1  # a catalog needs some weight
    return paths, None if weights is None else [float(w) for w in weights]


@settings(max_examples=120, deadline=None)
@given(catalogs(), st.sampled_from(["global", "conditional"]))
def test_random_catalogs_match_reference(
    catalog: tuple[list[list[int]], list[float] | None], mode: str
) -> None:
    paths, weights = catalog
    compare_with_reference(paths, weights, mode)


# A zero-weight item (spec section 2, "Zero-IG token"): 5 -> 6 carries all the weight of (5,).
ZERO_WEIGHT_PATHS = [[5, 6, 8, 2], [5, 7, 2], [9, 2]]
ZERO_WEIGHT_WEIGHTS = [3.0, 0.0, 1.0]


def test_zero_weight_sibling_makes_an_edge_zero_ig() -> None:
    trie = ItemTrie.from_token_ids(ZERO_WEIGHT_PATHS, ZERO_WEIGHT_WEIGHTS)
    h5 = -0.75 * math.log(0.75)  # H((5,)) = H((5, 6)): only item 0 (p = 3/4) lies below
    h9 = -0.25 * math.log(0.25)
    assert float(trie.entropy[node_of(trie, (5,))]) == pytest.approx(h5, abs=1e-7)
    assert float(trie.entropy[node_of(trie, (5, 7))]) == 0.0
    # The edge 5 -> 6 has IG exactly 0 and is flagged; its zero-weight sibling 7 gets IG H((5,)),
    # the largest IG, so IG~ at (5,) is {6: 0, 7: 1}.
    n6, n7 = node_of(trie, (5, 6)), node_of(trie, (5, 7))
    assert float(trie.info_gain[n6]) == 0.0 and bool(trie.zero_ig[n6])
    assert float(trie.info_gain[n7]) == pytest.approx(h5, abs=1e-7) and not bool(trie.zero_ig[n7])
    assert float(trie.info_gain_norm[n6]) == 0.0 and float(trie.info_gain_norm[n7]) == 1.0
    np.testing.assert_allclose(trie.path_information_gain([5, 6, 8, 2]), [h9, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(trie.path_information_gain([5, 7, 2]), [h9, h5, 0], atol=1e-7)
    np.testing.assert_allclose(trie.path_information_gain([9, 2]), [h5, 0], atol=1e-7)
    zero = {
        p
        for p in ReferenceTrie(ZERO_WEIGHT_PATHS).prefixes()
        if p and bool(trie.zero_ig[node_of(trie, p)])
    }
    assert zero == {(5, 6), (5, 6, 8), (5, 6, 8, 2), (5, 7, 2), (9, 2)}
    # Table 4 shares count the edge: zeros per path 3, 1, 1 over lengths 4, 3, 2; 5 of 8 edges.
    s = trie.stats()
    assert s["zero_ig_token_share"] == pytest.approx((3 * 3 + 0 * 1 + 1 * 1) / (3 * 4 + 1 * 2))
    assert s["zero_ig_token_share_uniform"] == pytest.approx(5 / 9)
    assert s["zero_ig_edge_share"] == pytest.approx(5 / 8)
    compare_with_reference(ZERO_WEIGHT_PATHS, ZERO_WEIGHT_WEIGHTS, "global")


def test_zero_weight_sibling_conditional_mode() -> None:
    trie = ItemTrie.from_token_ids(ZERO_WEIGHT_PATHS, ZERO_WEIGHT_WEIGHTS, entropy="conditional")
    # Renormalised inside (5,), item 0 has p = 1: H((5,)) = 0 exactly, as every node below the
    # root with a single weighted item (no float residue of h / mass + log mass).
    for prefix in [(5,), (5, 6), (5, 7), (9,), (5, 6, 8)]:
        assert float(trie.entropy[node_of(trie, prefix)]) == 0.0, prefix
    n6, n7 = node_of(trie, (5, 6)), node_of(trie, (5, 7))
    assert bool(trie.zero_ig[n6]) and not bool(trie.zero_ig[n7])
    # Both edges below (5,) have IG 0, so IG~ is 0 for both (equal IG).
    assert float(trie.info_gain[n6]) == 0.0 and float(trie.info_gain[n7]) == 0.0
    assert float(trie.info_gain_norm[n6]) == 0.0 and float(trie.info_gain_norm[n7]) == 0.0
    compare_with_reference(ZERO_WEIGHT_PATHS, ZERO_WEIGHT_WEIGHTS, "conditional")


def test_zero_weight_subtree_edges_are_zero_ig() -> None:
    # Below a node of weight 0 every sibling's weight is 0: all its edges have IG exactly 0.
    paths = [[5, 6, 2], [5, 7, 2], [9, 2]]
    trie = ItemTrie.from_token_ids(paths, [0.0, 0.0, 1.0])
    for prefix in [(5, 6), (5, 7), (5, 6, 2), (5, 7, 2), (9, 2)]:
        node = node_of(trie, prefix)
        assert bool(trie.zero_ig[node]) and float(trie.info_gain[node]) == 0.0, prefix
        assert float(trie.info_gain_norm[node]) == 0.0
    compare_with_reference(paths, [0.0, 0.0, 1.0], "global")


def test_conditional_mode_example() -> None:
    trie = ItemTrie.from_token_ids(EXAMPLE_PATHS, EXAMPLE_WEIGHTS, entropy="conditional")
    # Inside (10,): p = 4/7, 2/7, 1/7.
    p = np.array([4, 2, 1]) / 7
    h10 = float(-(p * np.log(p)).sum())
    assert float(trie.entropy[node_of(trie, (10,))]) == pytest.approx(h10, abs=1e-6)
    assert float(trie.entropy[node_of(trie, (20,))]) == pytest.approx(0.0, abs=1e-7)
    # Conditional IG can be negative: root -> 20 goes from H(root) to 0, root -> 10 to h10.
    root = float(trie.entropy[0])
    assert float(trie.info_gain[node_of(trie, (10,))]) == pytest.approx(root - h10, abs=1e-6)


def test_duplicates_share_a_leaf_and_add_weights() -> None:
    paths = [[5, 6, 2], [7, 2], [5, 6, 2]]
    trie = ItemTrie.from_token_ids(paths, [1.0, 2.0, 3.0])
    assert trie.num_items == 3 and trie.num_leaves == 2
    leaf = node_of(trie, (5, 6, 2))
    assert trie.items_of_node(leaf) == [0, 2]
    assert trie.item_ids_of_nodes(torch.tensor([leaf, 0, -1])).tolist() == [0, -1, -1]
    p = np.array([4.0, 2.0]) / 6.0
    assert float(trie.entropy[0]) == pytest.approx(float(-(p * np.log(p)).sum()), abs=1e-6)


def test_popularity_weights_counts_targets() -> None:
    w = popularity_weights([0, 2, 2, 3, 2], 5, smoothing=0.5)
    assert w.tolist() == [1.5, 0.5, 3.5, 1.5, 0.5]
    with pytest.raises(ValueError, match="out of range"):
        popularity_weights([7], 5)


def test_path_leaving_the_trie_is_a_clear_error(example_trie: ItemTrie) -> None:
    with pytest.raises(ValueError, match="leaves the trie at position 1: token 99"):
        example_trie.path_information_gain([10, 99])
    assert example_trie.walk([[10, 99], [20]]).tolist() == [-1, node_of(example_trie, (20,))]


def test_save_load_round_trip(tmp_path, example_trie: ItemTrie) -> None:  # noqa: ANN001
    path = tmp_path / "catalog.igdtrie"
    example_trie.save(str(path))
    for mmap in (True, False):
        loaded = ItemTrie.load(str(path), mmap=mmap)
        assert loaded.meta == example_trie.meta
        for name, arr in example_trie.arrays().items():
            assert torch.equal(loaded.array(name), arr), name
        np.testing.assert_allclose(
            loaded.path_information_gain(EXAMPLE_PATHS[2]), [0.259930, 0.693147, 0.0], atol=1e-6
        )


def test_pickle_round_trip(example_trie: ItemTrie) -> None:
    clone = pickle.loads(pickle.dumps(example_trie))
    assert clone.meta == example_trie.meta
    for name, arr in example_trie.arrays().items():
        assert torch.equal(clone.array(name), arr), name


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: b"XXXXXXXX" + b[8:], "wrong magic"),
        (lambda b: b[:8] + (99).to_bytes(4, "little") + b[12:], "format version 99"),
        (lambda b: b[: len(b) // 2], "past the end"),
        (lambda b: b[:5], "too short"),
    ],
)
def test_corrupt_files_are_rejected(tmp_path, example_trie: ItemTrie, mutate, match) -> None:  # noqa: ANN001
    good = tmp_path / "good.igdtrie"
    example_trie.save(str(good))
    bad = tmp_path / "bad.igdtrie"
    bad.write_bytes(mutate(good.read_bytes()))
    with pytest.raises(ValueError, match=match):
        ItemTrie.load(str(bad))


def test_large_fanout_root() -> None:
    n = 30_000
    trie = ItemTrie.from_token_ids([[i, 0] for i in range(1, n + 1)])
    assert trie.max_fanout == n
    assert float(trie.entropy[0]) == pytest.approx(math.log(n), rel=1e-6)
    ig = trie.info_gain[1 : n + 1]
    # IG = H(root) - H(child) = ln n - (1/n) ln n for every child.
    assert torch.allclose(ig, torch.full_like(ig, math.log(n) * (1 - 1 / n)), rtol=1e-6)
    assert bool((trie.info_gain_norm[1 : n + 1] == 0).all())
