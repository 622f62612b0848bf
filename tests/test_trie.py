"""The native ItemTrie against the spec's worked example and the pure-Python reference."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from igdbeam import InvalidIdError, ItemTrie, VocabularyError, popularity_weights
from oracles.trie import ReferenceTrie

# Spec section 5: terminator 2.
EXAMPLE_PATHS = [[10, 11, 12, 2], [10, 11, 13, 2], [10, 14, 2], [20, 21, 2]]
EXAMPLE_WEIGHTS = [4, 2, 1, 1]


def node_of(trie: ItemTrie, prefix: tuple[int, ...]) -> int:
    if not prefix:
        return 0
    node = int(trie.walk([list(prefix)])[0])
    assert node >= 0, prefix
    return node


@pytest.fixture
def example() -> ItemTrie:
    return ItemTrie.from_token_ids(EXAMPLE_PATHS, EXAMPLE_WEIGHTS)


def test_worked_example_entropies(example: ItemTrie) -> None:
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
    assert example.num_nodes == len(expected)
    for prefix, h in expected.items():
        assert float(example.entropy[node_of(example, prefix)]) == pytest.approx(h, abs=1e-6)


def test_worked_example_path_information_gain(example: ItemTrie) -> None:
    a = [0.259930, 0.259930, 0.346574, 0.0]
    np.testing.assert_allclose(example.path_information_gain(EXAMPLE_PATHS[0]), a, atol=1e-6)
    np.testing.assert_allclose(example.path_information_gain(EXAMPLE_PATHS[1]), a, atol=1e-6)
    np.testing.assert_allclose(
        example.path_information_gain(EXAMPLE_PATHS[2]), [0.259930, 0.693147, 0.0], atol=1e-6
    )
    np.testing.assert_allclose(
        example.path_information_gain(EXAMPLE_PATHS[3]), [0.953077, 0.0, 0.0], atol=1e-6
    )


def test_worked_example_normalised_ig_and_zero_flags(example: ItemTrie) -> None:
    norm = example.info_gain_norm
    assert float(norm[node_of(example, (10,))]) == 0.0
    assert float(norm[node_of(example, (20,))]) == 1.0
    assert float(norm[node_of(example, (10, 11))]) == 0.0
    assert float(norm[node_of(example, (10, 14))]) == 1.0
    assert float(norm[node_of(example, (10, 11, 12))]) == 0.0  # equal IG siblings
    assert float(norm[node_of(example, (10, 11, 13))]) == 0.0
    zero = {
        p
        for p in ReferenceTrie(EXAMPLE_PATHS).prefixes()
        if p and bool(example.zero_ig[node_of(example, p)])
    }
    assert zero == {(20, 21), (10, 14, 2), (20, 21, 2), (10, 11, 12, 2), (10, 11, 13, 2)}


def test_csr_layout_is_breadth_first_and_sorted(example: ItemTrie) -> None:
    off = example.child_offsets.tolist()
    tok = example.token.tolist()
    parent = example.parent.tolist()
    depth = example.depth.tolist()
    assert off[0] == 1 and off[-1] == example.num_nodes
    assert depth == sorted(depth)
    for n in range(example.num_nodes):
        kids = list(range(off[n], off[n + 1]))
        assert [tok[c] for c in kids] == sorted(tok[c] for c in kids)
        assert all(parent[c] == n and depth[c] == depth[n] + 1 for c in kids)
    tokens, nodes = example.children(0)
    assert tokens.tolist() == [10, 20] and nodes.tolist() == [1, 2]
    assert example.child_nodes.tolist() == list(range(1, example.num_nodes))


def test_stats_zero_ig_share_weighted_by_items(example: ItemTrie) -> None:
    s = example.stats()
    # zero-IG tokens per path: A 1, B 1, C 1, D 2; lengths 4, 4, 3, 3; weights 4, 2, 1, 1.
    assert s["zero_ig_token_share"] == pytest.approx((4 + 2 + 1 + 2) / (16 + 8 + 3 + 3))
    assert s["zero_ig_token_share_uniform"] == pytest.approx(5 / 14)
    assert s["num_items"] == 4 and s["num_leaves"] == 4 and s["max_depth"] == 4
    assert s["nbytes"] == example.nbytes and s["max_fanout"] == 2


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


@pytest.mark.parametrize(
    ("paths", "weights", "kwargs", "match"),
    [
        ([], None, {}, "empty"),
        ([[1, 2], []], None, {}, "item 1 has an empty token path"),
        ([[1, -3, 2]], None, {}, "item 0 has a negative token id -3"),
        ([[1, 2], [1, 99, 2]], None, {"vocab_size": 50}, "item 1 has token id 99"),
        ([[1, 2], [3, 2]], [1.0, -1.0], {}, "item 1 has weight -1"),
        ([[1, 2], [3, 2]], [1.0, float("nan")], {}, "item 1 has weight nan"),
        ([[1, 2], [3, 2]], [1.0], {}, "one value per item"),
        ([[1, 2], [3, 2]], [0.0, 0.0], {}, "sum to 0"),
        ([[1, 2], [1, 2, 4]], None, {}, "item 0's token path is a prefix of item 1's"),
        ([[1, 2]], None, {"entropy": "shannon"}, "entropy must be one of"),
    ],
)
def test_bad_input_raises_value_error(paths, weights, kwargs, match) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        ItemTrie.from_token_ids(paths, weights, **kwargs)


def test_path_leaving_the_trie_is_a_clear_error(example: ItemTrie) -> None:
    with pytest.raises(ValueError, match="leaves the trie at position 1: token 99"):
        example.path_information_gain([10, 99])
    assert example.walk([[10, 99], [20]]).tolist() == [-1, node_of(example, (20,))]


def test_save_load_round_trip(tmp_path, example: ItemTrie) -> None:  # noqa: ANN001
    path = tmp_path / "catalog.igdtrie"
    example.save(str(path))
    for mmap in (True, False):
        loaded = ItemTrie.load(str(path), mmap=mmap)
        assert loaded.meta == example.meta
        for name, arr in example.arrays().items():
            assert torch.equal(loaded.array(name), arr), name
        np.testing.assert_allclose(
            loaded.path_information_gain(EXAMPLE_PATHS[2]), [0.259930, 0.693147, 0.0], atol=1e-6
        )


def test_pickle_round_trip(example: ItemTrie) -> None:
    clone = pickle.loads(pickle.dumps(example))
    assert clone.meta == example.meta
    for name, arr in example.arrays().items():
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
def test_corrupt_files_are_rejected(tmp_path, example: ItemTrie, mutate, match) -> None:  # noqa: ANN001
    good = tmp_path / "good.igdtrie"
    example.save(str(good))
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


def test_native_view_keeps_its_arrays_alive() -> None:
    import gc

    from igdbeam.native.library import _C

    view = ItemTrie.from_token_ids(EXAMPLE_PATHS, EXAMPLE_WEIGHTS).native_view()
    gc.collect()
    tokens = torch.tensor([[10, 11, 13]], dtype=torch.int64)
    out = torch.empty(1, dtype=torch.int32)
    _C.walk_paths_cpu(view, tokens.data_ptr(), 1, 3, 3, 0, out.data_ptr())
    assert view.owner.token[int(out[0])] == 13 and view.owner.depth[int(out[0])] == 3


# ------------------------------------------------------------------ ids are integers, or refused
@pytest.mark.parametrize(
    ("paths", "match"),
    [
        # Truncating 3.5 to 3 would silently merge the two items' first tokens.
        ([[3.5, 9, 2], [3, 10, 2]], r"item 0 has token 3.5 \(float\) at position 0"),
        ([[3, 9, 2], [3, True, 2]], r"item 1 has token True \(bool\) at position 1"),
        ([[3, float("nan"), 2]], r"item 0 has token nan \(float\) at position 1"),
        ([[3, 9.0, 2]], r"item 0 has token 9.0 \(float\) at position 1"),
        ([[3, 2], np.array([4.0, 2.0])], r"item 1 has token 4.0 \(float\) at position 0"),
        ([[3, 2], torch.tensor([True, False])], r"item 1 has token True \(bool\)"),
        ([[3, 2], [np.float32(4), 2]], r"item 1 has token .*float32"),
        ([[3, "4", 2]], r"item 0 has token '4' \(str\) at position 1"),
        ([[3, None, 2]], r"item 0 has token None"),
    ],
)
def test_non_integer_token_ids_are_refused(paths, match) -> None:  # noqa: ANN001
    with pytest.raises(InvalidIdError, match=match):
        ItemTrie.from_token_ids(paths)


def test_numpy_and_tensor_integer_ids_are_accepted() -> None:
    paths = [
        [np.int64(10), np.int32(11), np.uint8(12), 2],
        np.array([10, 11, 13, 2], dtype=np.int16),
        torch.tensor([10, 14, 2]),
        (20, 21, 2),
    ]
    trie = ItemTrie.from_token_ids(paths, np.array(EXAMPLE_WEIGHTS, dtype=np.int32))
    reference = ItemTrie.from_token_ids(EXAMPLE_PATHS, EXAMPLE_WEIGHTS)
    for name, arr in reference.arrays().items():
        assert torch.equal(trie.array(name), arr), name


@pytest.mark.parametrize(
    ("offsets", "tokens", "match"),
    [
        (np.array([0, 2, 4]), np.array([3.0, 2.0, 4.0, 2.0]), "tokens must hold integer ids"),
        (np.array([0, 2, 4]), np.array([True, False, True, False]), "got dtype bool"),
        (torch.tensor([0, 2, 4]), torch.tensor([3.0, 2.0, 4.0, 2.0]), "got dtype torch.float32"),
        ([0, 2, 4], [3, 2, True, 2], r"tokens\[2\] = True \(bool\)"),
        ([0, 2, 4.0], [3, 2, 4, 2], r"offsets\[2\] = 4.0 \(float\)"),
        (np.array([0.0, 2.0]), np.array([3, 2]), "offsets must hold integer ids"),
    ],
)
def test_from_csr_refuses_non_integer_arrays(offsets, tokens, match) -> None:  # noqa: ANN001
    with pytest.raises(InvalidIdError, match=match):
        ItemTrie.from_csr(offsets, tokens)


def test_out_of_range_token_ids_raise_typed_errors() -> None:
    with pytest.raises(InvalidIdError, match="item 1 has a negative token id -3 at position 1"):
        ItemTrie.from_token_ids([[1, 2], [1, -3, 2]])
    with pytest.raises(VocabularyError, match=r"item 1 has token id 99 at position 1, outside"):
        ItemTrie.from_token_ids([[1, 2], [1, 99, 2]], vocab_size=50)
    with pytest.raises(InvalidIdError, match="does not fit in 32 bits"):
        ItemTrie.from_token_ids([[1, 2], [2**31, 2]])
    with pytest.raises(InvalidIdError, match="does not fit in 64 bits"):
        ItemTrie.from_token_ids([[1, 2], [2**70, 2]])
    for bad in (64.0, True, "64"):
        with pytest.raises(InvalidIdError, match="vocab_size must be an integer"):
            ItemTrie.from_token_ids([[1, 2]], vocab_size=bad)
    with pytest.raises(ValueError, match="vocab_size must be a positive integer"):
        ItemTrie.from_token_ids([[1, 2]], vocab_size=0)
    assert issubclass(InvalidIdError, ValueError) and issubclass(VocabularyError, ValueError)


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([4, True, 1, 1], r"item 1 has weight True \(bool\)"),
        ([4, "2", 1, 1], r"item 1 has weight '2' \(str\)"),
        ([4, None, 1, 1], r"item 1 has weight None"),
        (torch.tensor([True, True, False, True]), "got dtype torch.bool"),
        (np.array([True, True, False, True]), "got dtype bool"),
        (np.array(["4", "2", "1", "1"]), "must be real numbers"),
        ([4, 2, float("nan"), 1], "item 2 has weight nan"),
        ([4, 2, -1.0, 1], "item 2 has weight -1"),
        ([4, 2, float("inf"), 1], "item 2 has weight inf"),
    ],
)
def test_bad_weights_are_refused(weights, match) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        ItemTrie.from_token_ids(EXAMPLE_PATHS, weights)


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        ([0, 1.5, 2], r"target_item_ids\[1\] = 1.5 \(float\)"),
        ([0, True], r"target_item_ids\[1\] = True \(bool\)"),
        ([float("nan")], r"target_item_ids\[0\] = nan"),
        (np.array([0.0, 1.0]), "must hold integer ids, got dtype float64"),
        (torch.tensor([1.0]), "got dtype torch.float32"),
        (torch.tensor([True]), "got dtype torch.bool"),
        ([0, -1], r"target item id -1 \(entry 1\) is out of range"),
        (np.array([5]), r"target item id 5 \(entry 0\) is out of range \[0, 5\)"),
    ],
)
def test_popularity_weights_refuses_bad_ids(ids, match) -> None:  # noqa: ANN001
    with pytest.raises(InvalidIdError, match=match):
        popularity_weights(ids, 5)


def test_popularity_weights_refuses_bad_num_items_and_smoothing() -> None:
    for bad in (5.0, True, "5"):
        with pytest.raises(InvalidIdError, match="num_items must be an integer"):
            popularity_weights([0], bad)
    with pytest.raises(ValueError, match="smoothing must be a number"):
        popularity_weights([0], 5, smoothing=True)
    # Integer ids of any integer type are counted exactly.
    ids = [np.int64(1), 1, np.uint8(3)]
    assert popularity_weights(ids, 4).tolist() == [0.0, 2.0, 0.0, 1.0]
    assert popularity_weights(torch.tensor([3, 3], dtype=torch.int32), 4).tolist() == [0, 0, 0, 2]


def test_trie_queries_refuse_non_integer_ids(example: ItemTrie) -> None:
    with pytest.raises(InvalidIdError, match=r"item id must be an integer, got 1.5 \(float\)"):
        example.item_path(1.5)
    with pytest.raises(InvalidIdError, match="item id must be an integer, got True"):
        example.item_path(True)
    with pytest.raises(InvalidIdError, match=r"item id 4 is out of range \[0, 4\)"):
        example.item_path(4)
    with pytest.raises(InvalidIdError, match="node id must be an integer, got 2.0"):
        example.items_of_node(2.0)
    with pytest.raises(InvalidIdError, match="node id must be an integer"):
        example.is_leaf(torch.tensor(2.0))
    with pytest.raises(InvalidIdError, match="node id 99 is out of range"):
        example.children(99)
    with pytest.raises(InvalidIdError, match="nodes must hold integer node ids"):
        example.item_ids_of_nodes(torch.tensor([1.5]))
    with pytest.raises(InvalidIdError, match=r"tokens\[1\]\[1\] = 11.0 \(float\)"):
        example.walk([[10], [10, 11.0]])
    with pytest.raises(InvalidIdError, match=r"tokens\[0\] = 10.0 \(float\)"):
        example.path_information_gain([10.0])
    # Integers of any kind keep working.
    assert example.item_path(np.int64(2)) == example.item_path(torch.tensor(2)) == [10, 14, 2]
    leaf = int(example.walk([[20, 21, 2]])[0])
    assert example.items_of_node(np.int32(leaf)) == [3]
    assert example.item_ids_of_nodes(np.array([leaf, 0])).tolist() == [3, -1]
    # An int64 id past the trie is no leaf (not wrapped around to leaf + 0 in int32).
    far = torch.tensor([[2**32 + leaf, -1], [leaf, 99]])
    assert example.item_ids_of_nodes(far).tolist() == [[-1, -1], [3, -1]]


def test_decode_ops_refuse_non_integer_ids(example: ItemTrie) -> None:
    from igdbeam import beam_step, label_token_weights, processor_step

    ids, scores = torch.tensor([[1, 10]]), torch.zeros(1, 32)
    for bad in (1.0, True):
        with pytest.raises(InvalidIdError, match="prompt_length must be an integer"):
            processor_step(example, ids, scores, prompt_length=bad)
    with pytest.raises(InvalidIdError, match="eos_token_id must be an integer"):
        processor_step(example, ids, scores, prompt_length=1, eos_token_id=2.0)
    with pytest.raises(VocabularyError, match="eos_token_id 40 is outside"):
        processor_step(example, ids, scores, prompt_length=1, eos_token_id=40)
    with pytest.raises(VocabularyError, match="holds token id 21 but the scores have only 16"):
        processor_step(example, ids, torch.zeros(1, 16), prompt_length=1)
    nodes = torch.zeros(2, dtype=torch.int32)
    with pytest.raises(InvalidIdError, match="beams must be an integer"):
        beam_step(example, torch.zeros(2, 32), torch.zeros(2), nodes, beams=2.0, num_candidates=2)
    # A node id past the trie is a caller bug, not an inactive beam (negative ids are).
    with pytest.raises(ValueError, match=r"nodes\[1\] = 12 is not a node of the trie"):
        beam_step(
            example,
            torch.zeros(2, 32),
            torch.zeros(2),
            torch.tensor([0, 12], dtype=torch.int32),
            beams=2,
            num_candidates=2,
        )
    labels = torch.tensor([[10, 40]])
    with pytest.raises(VocabularyError, match=r"labels\[0, 1\] = 40"):
        label_token_weights(labels, example, 0.5, vocab_size=32)
    with pytest.raises(InvalidIdError, match="ignore_index must be an integer"):
        label_token_weights(labels, example, 0.5, ignore_index=-100.0)
