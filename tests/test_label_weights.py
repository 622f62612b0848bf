"""The label-weights op on every backend (CPU always, CUDA where built and present).

Judged by the spec's worked example, the pure-Python reference (``oracles``) and the float64
numpy reference of the kernel (``cuda_testing.ref_label_weights``); CUDA also bit for bit
against the CPU op.
"""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cuda_testing import (
    cuda_marks,
)
from igdbeam import ItemTrie, label_token_weights, positional_token_weights
from igdbeam.errors import LeftTrieError
from oracles.loss import (
    IGNORE,
    reference_positional_weights,
    reference_row_weights,
)
from oracles.trie import ReferenceTrie

I = IGNORE  # noqa: E741
PATHS = [[10, 11, 12, 2], [10, 11, 13, 2], [10, 14, 2], [20, 21, 2]]
WEIGHTS = [4.0, 2.0, 1.0, 1.0]
CUDA = pytest.param("cuda", marks=cuda_marks)
OFF_TRIE = {0: "error", 1: "uniform", 2: "ignore"}


@pytest.fixture(params=["cpu", CUDA])
def backend(request: pytest.FixtureRequest) -> str:
    """The device the op runs on."""
    return request.param


@pytest.fixture(scope="module")
def cpu_trie() -> ItemTrie:
    """The trie of PATHS on the CPU."""
    return ItemTrie.from_token_ids(PATHS, WEIGHTS, vocab_size=32)


@pytest.fixture
def trie(cpu_trie: ItemTrie, backend: str) -> ItemTrie:
    """The trie of PATHS on the backend's device."""
    return cpu_trie.to(backend)


def assert_values(actual: torch.Tensor, expected: list) -> None:
    """Compare a float tensor (any device) with a (nested) list of expected values."""
    actual = actual.cpu()
    torch.testing.assert_close(
        actual, torch.tensor(expected, dtype=actual.dtype), atol=1e-6, rtol=0
    )


def test_worked_example_exact(trie: ItemTrie, backend: str) -> None:
    """Spec section 5: per-token IG along A and D, zero-IG flags and weights with beta 0.1."""
    labels = torch.tensor(
        [
            [I, I, 10, 11, 12, 2, I],  # A
            [I, 20, 21, 2, I, I, I],  # D
            [I, I, I, 10, 14, 2, I],  # C
            [I, I, I, I, I, I, I],  # no completion
        ]
    )
    out = label_token_weights(labels.to(backend), trie, 0.1)
    assert out.weight.device.type == backend
    expected_ig = [
        [0, 0, 0.259930, 0.259930, 0.346574, 0, 0],
        [0, 0.953077, 0, 0, 0, 0, 0],
        [0, 0, 0, 0.259930, 0.693147, 0, 0],
        [0] * 7,
    ]
    torch.testing.assert_close(out.info_gain.cpu(), torch.tensor(expected_ig), atol=2e-6, rtol=0)
    assert out.zero_ig.tolist() == [
        [False, False, False, False, False, True, False],
        [False, False, True, True, False, False, False],
        [False, False, False, False, False, True, False],
        [False] * 7,
    ]
    assert_values(
        out.weight,
        [
            [0, 0, 1, 1, 1, 0.1, 0],
            [0, 1, 0.1, 0.1, 0, 0, 0],
            [0, 0, 0, 1, 1, 0.1, 0],
            [0] * 7,
        ],
    )
    assert out.row_status.tolist() == [0, 0, 0, 0]
    assert out.num_left_trie == 0 and out.left_trie_rows == []
    assert out.info_gain.dtype == torch.float32 and out.weight.dtype == torch.float32


def test_prefix_of_a_path_is_ok(trie: ItemTrie, backend: str) -> None:
    """A truncated completion (prefix of an item path) is still on the trie."""
    out = label_token_weights(torch.tensor([[I, 10, 11]], device=backend), trie, 0.5)
    assert out.row_status.tolist() == [0]
    assert out.weight.tolist() == [[0.0, 1.0, 1.0]]


@pytest.mark.parametrize(("policy", "off_weight"), [("uniform", 0.25), ("ignore", 0.0)])
def test_off_trie_policies(trie: ItemTrie, backend: str, policy: str, off_weight: float) -> None:
    """Rows leaving the trie get the policy's weight and no IG or zero-IG flag."""
    labels = torch.tensor(
        [
            [I, 10, 14, 2, 5, I],  # tokens after a leaf
            [I, I, 10, 30, 2, I],  # 30 is not a child of (10,)
            [I, 20, 21, 2, I, I],  # fine
            [7, I, I, I, I, I],  # first token not a child of the root
        ]
    )
    out = label_token_weights(labels.to(backend), trie, 0.25, off_trie=policy)
    ow = off_weight
    assert_values(
        out.weight,
        [
            [0, ow, ow, ow, ow, 0],
            [0, 0, ow, ow, ow, 0],
            [0, 1, 0.25, 0.25, 0, 0],
            [ow, 0, 0, 0, 0, 0],
        ],
    )
    assert out.row_status.tolist() == [1, 1, 0, 1]
    assert out.left_trie_rows == [0, 1, 3] and out.num_left_trie == 3
    assert out.left_trie.tolist() == [True, True, False, True]
    assert not out.zero_ig[[0, 1, 3]].any() and not out.info_gain[[0, 1, 3]].any()


def test_off_trie_error_names_rows_and_token(trie: ItemTrie, backend: str) -> None:
    """off_trie="error" raises a LeftTrieError naming every offending row and token."""
    labels = torch.tensor([[I, 20, 21, 2], [I, 10, 30, 2], [10, 14, 2, 5]], device=backend)
    with pytest.raises(LeftTrieError, match=r"2 row\(s\) \[1, 2\]") as info:
        label_token_weights(labels, trie, 0.1, off_trie="error")
    msg = str(info.value)
    assert "row 1: position 2 (completion token 1): token 30 is not a child" in msg
    assert "row 2: position 3 (completion token 3): token 5 is after a complete item path" in msg


def test_row_stride_and_int32(trie: ItemTrie, backend: str) -> None:
    """A column slice (row stride > cols) and int32 labels give the same result."""
    big = torch.full((2, 9), I, dtype=torch.int64)
    big[0, 3:7] = torch.tensor([10, 11, 13, 2])
    big[1, 2:5] = torch.tensor([20, 21, 2])
    view = big.to(backend)[:, 1:8]
    assert view.stride(0) == 9
    ref = label_token_weights(view.contiguous(), trie, 0.3)
    for labels in (view, view.to(torch.int32)):
        out = label_token_weights(labels, trie, 0.3)
        assert torch.equal(out.weight, ref.weight) and torch.equal(out.info_gain, ref.info_gain)


def test_empty_shapes(trie: ItemTrie, backend: str) -> None:
    """No rows or no columns: empty outputs of the right shape."""
    for shape in [(0, 5), (3, 0)]:
        labels = torch.zeros(shape, dtype=torch.int64, device=backend)
        out = label_token_weights(labels, trie, 0.1)
        assert out.weight.shape == shape and out.row_status.shape == (shape[0],)
        assert not out.weight.any() and not out.row_status.any()


def test_custom_ignore_index(trie: ItemTrie, backend: str) -> None:
    """ignore_index=0 skips the zeros instead of -100."""
    labels = torch.tensor([[0, 20, 21, 2, 0]], device=backend)
    out = label_token_weights(labels, trie, 0.1, ignore_index=0)
    assert_values(out.weight, [[0, 1, 0.1, 0.1, 0]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": 1.5}, r"beta must lie in \[0, 1\]"),
        ({"beta": -0.1}, r"beta must lie in \[0, 1\]"),
        ({"beta": float("nan")}, r"beta must lie in \[0, 1\]"),
        ({"beta": "x"}, r"beta must be a number"),
        ({"off_trie": "skip"}, r"off_trie must be one of"),
    ],
)
def test_bad_arguments(cpu_trie: ItemTrie, kwargs: dict, match: str) -> None:
    """Bad beta or off_trie values are rejected with a clear message."""
    args = {"beta": 0.1, **kwargs}
    beta = args.pop("beta")
    with pytest.raises(ValueError, match=match):
        label_token_weights(torch.tensor([[10, 11]]), cpu_trie, beta, **args)


def test_bad_labels(cpu_trie: ItemTrie) -> None:
    """Bad label shapes, dtypes and token ids are rejected with a clear message."""
    trie = cpu_trie
    with pytest.raises(ValueError, match="2 dimensions"):
        label_token_weights(torch.tensor([10, 11]), trie, 0.1)
    with pytest.raises(ValueError, match="dtype int64"):
        label_token_weights(torch.tensor([[10.0, 11.0]]), trie, 0.1)
    with pytest.raises(ValueError, match=r"labels\[0, 1\] = 40 .* \[0, 32\)"):
        label_token_weights(torch.tensor([[10, 40]]), trie, 0.1)
    with pytest.raises(ValueError, match=r"labels\[1, 0\] = -5"):
        label_token_weights(torch.tensor([[10, 11], [-5, 2]]), trie, 0.1)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        label_token_weights(torch.tensor([[10, 11]]), trie, 0.1, vocab_size=8)
    with pytest.raises(ValueError, match="must be a torch.Tensor"):
        label_token_weights([[10, 11]], trie, 0.1)  # type: ignore[arg-type]


def test_positional_weights_exact() -> None:
    """The positional baseline: 1 at the first completion token, falling by beta."""
    labels = torch.tensor([[I, 5, 6, 7, 8, 9, I], [I, I, I, I, 4, I, I], [I] * 7])
    w = positional_token_weights(labels, 0.2)
    assert_values(w, [[0, 1.0, 0.8, 0.6, 0.4, 0.2, 0], [0, 0, 0, 0, 1.0, 0, 0], [0] * 7])
    with pytest.raises(ValueError, match="beta"):
        positional_token_weights(labels, 2.0)


# ---------------------------------------------------------------------- random vs reference
def _random_case(rng: random.Random, vocab: int = 12):
    n_items = rng.randint(1, 12)
    paths = set()
    while len(paths) < n_items:
        body = tuple(rng.randrange(3, vocab) for _ in range(rng.randint(1, 5)))
        paths.add(body + (2,))  # terminator 2 makes every path end in a leaf
    paths = sorted(paths)
    weights = [float(rng.randint(1, 5)) for _ in paths]
    rows = []
    cols = rng.randint(1, 10)
    for _ in range(rng.randint(1, 6)):
        p = list(rng.choice(paths))
        kind = rng.random()
        if kind < 0.2:
            p = p[: rng.randint(0, len(p))]  # a prefix
        elif kind < 0.4 and p:
            p[rng.randrange(len(p))] = rng.randrange(0, vocab)  # maybe corrupted
        elif kind < 0.5:
            p = p + [rng.randrange(0, vocab)]  # token after the leaf
        p = p[:cols]
        start = rng.randint(0, cols - len(p))
        row = [I] * cols
        row[start : start + len(p)] = p
        if rng.random() < 0.2 and len(p) > 2:  # an ignored hole inside the completion
            row[start + 1] = I
        rows.append(row)
    return paths, weights, rows, vocab


@pytest.mark.parametrize("backend", ["cpu", CUDA])
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    beta=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    policy=st.sampled_from(["uniform", "ignore"]),
    entropy=st.sampled_from(["global", "conditional"]),
)
def test_random_against_reference(
    backend: str, seed: int, beta: float, policy: str, entropy: str
) -> None:
    """Random tries and label rows: every row's IG, flags and weights equal the reference's."""
    paths, weights, rows, vocab = _random_case(random.Random(seed))
    ref = ReferenceTrie(paths, weights, entropy=entropy)
    trie = ItemTrie.from_token_ids(paths, weights, entropy=entropy, vocab_size=vocab)
    labels = torch.tensor(rows, device=backend)
    out = label_token_weights(labels, trie.to(backend), beta, off_trie=policy)
    for r, row in enumerate(rows):
        ig, zero, weight, left = reference_row_weights(ref, row, beta, policy)
        assert out.row_status[r].item() == int(left), (row, paths)
        torch.testing.assert_close(
            out.info_gain[r].cpu(), torch.tensor(ig, dtype=torch.float32), atol=1e-5, rtol=1e-5
        )
        assert out.zero_ig[r].tolist() == zero
        assert_values(out.weight[r], weight)
    pos = positional_token_weights(labels, beta)
    expected_pos = [reference_positional_weights(row, beta) for row in rows]
    assert_values(pos, expected_pos)


def test_large_batch_matches_rowwise(trie: ItemTrie, backend: str) -> None:
    """A batch big enough for the multi-threaded path equals the op applied row by row."""
    g = torch.Generator().manual_seed(0)
    rows, cols = 1100, 1000  # > 2**20 elements
    labels = torch.full((rows, cols), I, dtype=torch.int64)
    choices = PATHS + [[10, 30, 2], [20, 21, 2, 3]]
    for r in range(rows):
        p = choices[int(torch.randint(len(choices), (1,), generator=g))]
        s = int(torch.randint(cols - len(p), (1,), generator=g))
        labels[r, s : s + len(p)] = torch.tensor(p)
    labels = labels.to(backend)
    out = label_token_weights(labels, trie, 0.1)
    for r in range(0, rows, 97):
        one = label_token_weights(labels[r : r + 1], trie, 0.1)
        assert torch.equal(out.weight[r], one.weight[0])
        assert torch.equal(out.info_gain[r], one.info_gain[0])
        assert out.row_status[r] == one.row_status[0]
    assert out.num_left_trie > 0
