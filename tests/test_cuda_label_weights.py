"""CUDA label token weights vs the reference and the C++ kernel (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cuda_testing import NumpyTrie, build, cuda_marks, native_op, random_catalog, ref_label_weights
from oracles.loss import reference_row_weights
from oracles.trie import ReferenceTrie

pytestmark = cuda_marks

CUDA_OP, CPU_OP = native_op("label_weights", "cuda"), native_op("label_weights", "cpu")

IGNORE = -100


def _labels(rng, paths, rows, cols, off_rate=0.2, holes=0.1):
    labels = np.full((rows, cols), IGNORE, dtype=np.int64)
    for r in range(rows):
        p = list(paths[int(rng.integers(len(paths)))])
        start = int(rng.integers(0, max(1, cols - len(p))))
        p = p[: cols - start]
        if rng.random() < off_rate:
            p[int(rng.integers(len(p)))] = 999
        labels[r, start : start + len(p)] = p
        if rng.random() < holes:  # an ignored hole inside the completion
            labels[r, start] = IGNORE
    labels[0] = IGNORE  # a padding row: no completion at all
    return torch.from_numpy(labels)


def _run(op, view, labels, beta, policy, device):
    rows, cols = labels.shape
    out = (
        torch.empty((rows, cols), dtype=torch.float32, device=device),
        torch.empty((rows, cols), dtype=torch.uint8, device=device),
        torch.empty((rows, cols), dtype=torch.float32, device=device),
        torch.empty(rows, dtype=torch.int32, device=device),
    )
    op(view, labels.data_ptr(), rows, cols, labels.stride(0), IGNORE, beta, policy,
       *(t.data_ptr() for t in out))  # fmt: skip
    return [t.cpu() for t in out]


@pytest.mark.parametrize("policy", [0, 1, 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_label_weights_match_reference_and_cpu(policy: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    paths, weights = random_catalog(rng, 200, alphabet=6, max_len=8)
    trie = build(paths, weights)
    gpu = trie.to("cuda")
    labels = _labels(rng, paths, 97, 75)  # 75 columns: more than two warp chunks
    beta = 0.25
    got = _run(CUDA_OP, gpu.native_view(), labels.cuda(), beta, policy, "cuda")  # fmt: skip
    torch.cuda.synchronize()
    ig, zero, w, status = ref_label_weights(NumpyTrie(trie), labels, IGNORE, beta, policy)
    assert got[3].numpy().tolist() == status.tolist()
    assert 0 < status.sum() < len(status)
    np.testing.assert_allclose(got[0].numpy(), ig, rtol=0, atol=0)
    assert (got[1].numpy() == zero).all()
    np.testing.assert_allclose(got[2].numpy(), w, rtol=0, atol=0)
    # The same bits on every row, rows that leave the trie included.
    cpu = _run(CPU_OP, trie.native_view(), labels, beta, policy, "cpu")
    assert cpu[3].tolist() == got[3].tolist()
    for g, c in zip(got, cpu, strict=True):
        torch.testing.assert_close(g, c, rtol=0, atol=0)


def test_label_weights_strided_labels() -> None:
    rng = np.random.default_rng(5)
    paths, _ = random_catalog(rng, 50)
    trie = build(paths)
    wide = _labels(rng, paths, 20, 40, off_rate=0.0, holes=0.0)
    view = torch.cat([wide, wide], dim=1)[:, :40].cuda()  # row stride 80
    got = _run(CUDA_OP, trie.to("cuda").native_view(), view, 0.1, 1, "cuda")  # fmt: skip
    torch.cuda.synchronize()
    ig, zero, w, status = ref_label_weights(NumpyTrie(trie), wide, IGNORE, 0.1, 1)
    assert (status == 0).all() and got[3].tolist() == status.tolist()
    np.testing.assert_allclose(got[2].numpy(), w)
    np.testing.assert_allclose(got[0].numpy(), ig)


@pytest.mark.parametrize("policy", [0, 1, 2])
def test_label_weights_zero_weight_items_and_rows_leaving_the_trie(policy: int) -> None:
    """The pure-Python reference decides every row: a zero-weight sibling makes 5 -> 6 zero-IG,
    and a row that leaves the trie after a walked prefix has IG 0 and no zero-IG flag anywhere
    (on CUDA as on the CPU), only the policy's weight on its completion."""
    paths, weights = [[5, 6, 8, 2], [5, 7, 2], [9, 2]], [3.0, 0.0, 1.0]
    trie = build(paths, weights)
    x = IGNORE
    rows = [
        [x, 5, 6, 8, 2, x, x],  # zero-IG flags on 6, 8 and 2
        [x, x, 5, 7, 2, x, x],  # the zero-weight item: 7 is not zero-IG
        [x, 5, 6, 8, 99, x, x],  # leaves the trie after three tokens (two of them zero-IG)
        [5, 9, 2, x, x, x, x],  # leaves at its second token
        [x, 5, x, 6, 8, 2, x],  # an ignored hole inside the completion
        [x] * 7,  # padding only
    ]
    labels = torch.tensor(rows, dtype=torch.int64)
    beta = 0.25
    got = _run(CUDA_OP, trie.to("cuda").native_view(), labels.cuda(), beta, policy,
               "cuda")  # fmt: skip
    torch.cuda.synchronize()
    ref = ReferenceTrie(paths, weights)
    off_trie = {0: "error", 1: "uniform", 2: "ignore"}[policy]
    want = [reference_row_weights(ref, row, beta, off_trie) for row in rows]
    assert got[3].tolist() == [int(w[3]) for w in want] == [0, 0, 1, 1, 0, 0]
    np.testing.assert_allclose(got[0].numpy(), [w[0] for w in want], rtol=1e-6, atol=0)
    assert got[1].numpy().astype(bool).tolist() == [w[1] for w in want]
    np.testing.assert_array_equal(got[2].numpy(), np.array([w[2] for w in want], np.float32))
    assert got[1][0].tolist() == [0, 0, 1, 1, 1, 0, 0] and got[1][1].tolist() == [0] * 4 + [1, 0, 0]
    assert not got[1][2:4].any() and not got[0][2:4].any()
    cpu = _run(CPU_OP, trie.native_view(), labels, beta, policy, "cpu")
    for g, c in zip(got, cpu, strict=True):
        torch.testing.assert_close(g, c, rtol=0, atol=0)
