"""ItemTrie's input checks: bad catalogs are a ValueError naming the item, ids must be integers
(never truncated), weights real and finite, and every query and native op refuses bad ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factories.catalogs import EXAMPLE_PATHS, EXAMPLE_WEIGHTS
from igdbeam import InvalidIdError, ItemTrie, VocabularyError, popularity_weights


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
    for bad in (True, "1", None):
        with pytest.raises(ValueError, match="smoothing must be a number >= 0"):
            popularity_weights([0], 5, smoothing=bad)
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="smoothing must be a finite number >= 0"):
            popularity_weights([0], 5, smoothing=bad)
    assert popularity_weights([0, 0], 2, smoothing=np.float32(0.5)).tolist() == [2.5, 0.5]
    # Integer ids of any integer type are counted exactly.
    ids = [np.int64(1), 1, np.uint8(3)]
    assert popularity_weights(ids, 4).tolist() == [0.0, 2.0, 0.0, 1.0]
    assert popularity_weights(torch.tensor([3, 3], dtype=torch.int32), 4).tolist() == [0, 0, 0, 2]


def test_trie_queries_refuse_non_integer_ids(example_trie: ItemTrie) -> None:
    with pytest.raises(InvalidIdError, match=r"item id must be an integer, got 1.5 \(float\)"):
        example_trie.item_path(1.5)
    with pytest.raises(InvalidIdError, match="item id must be an integer, got True"):
        example_trie.item_path(True)
    with pytest.raises(InvalidIdError, match=r"item id 4 is out of range \[0, 4\)"):
        example_trie.item_path(4)
    with pytest.raises(InvalidIdError, match="node id must be an integer, got 2.0"):
        example_trie.items_of_node(2.0)
    with pytest.raises(InvalidIdError, match="node id must be an integer"):
        example_trie.is_leaf(torch.tensor(2.0))
    with pytest.raises(InvalidIdError, match="node id 99 is out of range"):
        example_trie.children(99)
    with pytest.raises(InvalidIdError, match="nodes must hold integer node ids"):
        example_trie.item_ids_of_nodes(torch.tensor([1.5]))
    with pytest.raises(InvalidIdError, match=r"tokens\[1\]\[1\] = 11.0 \(float\)"):
        example_trie.walk([[10], [10, 11.0]])
    with pytest.raises(InvalidIdError, match=r"tokens\[0\] = 10.0 \(float\)"):
        example_trie.path_information_gain([10.0])
    # Integers of any kind keep working.
    assert (
        example_trie.item_path(np.int64(2))
        == example_trie.item_path(torch.tensor(2))
        == [10, 14, 2]
    )
    leaf = int(example_trie.walk([[20, 21, 2]])[0])
    assert example_trie.items_of_node(np.int32(leaf)) == [3]
    assert example_trie.item_ids_of_nodes(np.array([leaf, 0])).tolist() == [3, -1]
    # An int64 id past the trie is no leaf (not wrapped around to leaf + 0 in int32).
    far = torch.tensor([[2**32 + leaf, -1], [leaf, 99]])
    assert example_trie.item_ids_of_nodes(far).tolist() == [[-1, -1], [3, -1]]


def test_decode_ops_refuse_non_integer_ids(example_trie: ItemTrie) -> None:
    from igdbeam import beam_step, label_token_weights, processor_step

    ids, scores = torch.tensor([[1, 10]]), torch.zeros(1, 32)
    for bad in (1.0, True):
        with pytest.raises(InvalidIdError, match="prompt_length must be an integer"):
            processor_step(example_trie, ids, scores, prompt_length=bad)
    with pytest.raises(InvalidIdError, match="eos_token_id must be an integer"):
        processor_step(example_trie, ids, scores, prompt_length=1, eos_token_id=2.0)
    with pytest.raises(VocabularyError, match="eos_token_id 40 is outside"):
        processor_step(example_trie, ids, scores, prompt_length=1, eos_token_id=40)
    with pytest.raises(VocabularyError, match="holds token id 21 but the scores have only 16"):
        processor_step(example_trie, ids, torch.zeros(1, 16), prompt_length=1)
    nodes = torch.zeros(2, dtype=torch.int32)
    with pytest.raises(InvalidIdError, match="beams must be an integer"):
        beam_step(
            example_trie, torch.zeros(2, 32), torch.zeros(2), nodes, beams=2.0, num_candidates=2
        )
    # A node id past the trie is a caller bug, not an inactive beam (negative ids are).
    with pytest.raises(ValueError, match=r"nodes\[1\] = 12 is not a node of the trie"):
        beam_step(
            example_trie,
            torch.zeros(2, 32),
            torch.zeros(2),
            torch.tensor([0, 12], dtype=torch.int32),
            beams=2,
            num_candidates=2,
        )
    labels = torch.tensor([[10, 40]])
    with pytest.raises(VocabularyError, match=r"labels\[0, 1\] = 40"):
        label_token_weights(labels, example_trie, 0.5, vocab_size=32)
    with pytest.raises(InvalidIdError, match="ignore_index must be an integer"):
        label_token_weights(labels, example_trie, 0.5, ignore_index=-100.0)
