"""The native label-weights kernel (``_C.label_weights``) on every backend against the float64
numpy reference, and the CUDA op against the CPU op bit for bit (also through ``igd_loss``)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.nn import functional

from cuda_testing import (
    NumpyTrie,
    assert_within_reference_error,
    cuda_marks,
    cuda_only,
    native_op,
    ref_label_weights,
)
from factories.catalogs import synthetic_catalog
from igdbeam import ItemTrie, igd_loss, label_token_weights
from igdbeam.errors import LeftTrieError
from oracles.loss import IGNORE, reference_igd_loss, reference_row_weights
from oracles.trie import ReferenceTrie

CUDA = pytest.param("cuda", marks=cuda_marks)
OFF_TRIE = {0: "error", 1: "uniform", 2: "ignore"}


def _catalog(seed: int, num_items: int, **kwargs) -> tuple[list[list[int]], list[float]]:
    """Paths of the shared generator (item 0 duplicated) and popularity-like weights."""
    cat = synthetic_catalog(num_items, 64, seed=seed, duplicates=(0,), **kwargs)
    weights = np.random.default_rng(seed).integers(1, 20, size=cat.num_items)
    return cat.paths(), [float(w) for w in weights]


def _labels(rng, paths, rows, cols, off_rate=0.2, holes=0.1) -> torch.Tensor:
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


def _run(backend: str, trie: ItemTrie, labels: torch.Tensor, beta: float, policy: int):
    """The kernel's (info_gain, zero_ig, weight, row_status) on ``backend``, copied to the CPU."""
    rows, cols = labels.shape
    labels = labels.to(backend)
    out = (
        torch.empty((rows, cols), dtype=torch.float32, device=backend),
        torch.empty((rows, cols), dtype=torch.uint8, device=backend),
        torch.empty((rows, cols), dtype=torch.float32, device=backend),
        torch.empty(rows, dtype=torch.int32, device=backend),
    )
    op = native_op("label_weights", backend)
    op(trie.to(backend).native_view(), labels.data_ptr(), rows, cols, labels.stride(0), IGNORE,
       beta, policy, *(t.data_ptr() for t in out))  # fmt: skip
    if backend == "cuda":
        torch.cuda.synchronize()
    return [t.cpu() for t in out]


def _same_as_cpu(got: list, trie: ItemTrie, labels: torch.Tensor, beta: float, policy: int):
    """Every output equals the CPU kernel's bit for bit, rows that leave the trie included."""
    cpu = _run("cpu", trie, labels, beta, policy)
    for g, c in zip(got, cpu, strict=True):
        torch.testing.assert_close(g, c, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["cpu", CUDA])
@pytest.mark.parametrize("policy", [0, 1, 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_kernel_matches_reference(backend: str, policy: int, seed: int) -> None:
    """Random rows (some leaving the trie, some with holes) equal the numpy reference exactly."""
    rng = np.random.default_rng(seed)
    paths, weights = _catalog(seed, 200, alphabet=6, max_len=8)
    trie = ItemTrie.from_token_ids(paths, weights)
    labels = _labels(rng, paths, 97, 75)  # 75 columns: more than two warp chunks
    beta = 0.25
    got = _run(backend, trie, labels, beta, policy)
    ig, zero, w, status = ref_label_weights(NumpyTrie(trie), labels, IGNORE, beta, policy)
    assert got[3].numpy().tolist() == status.tolist()
    assert 0 < status.sum() < len(status)
    np.testing.assert_allclose(got[0].numpy(), ig, rtol=0, atol=0)
    assert (got[1].numpy() == zero).all()
    np.testing.assert_allclose(got[2].numpy(), w, rtol=0, atol=0)
    _same_as_cpu(got, trie, labels, beta, policy)


@pytest.mark.parametrize("backend", ["cpu", CUDA])
def test_kernel_strided_labels(backend: str) -> None:
    """A row stride of twice the columns reads the right tokens."""
    rng = np.random.default_rng(5)
    paths, _ = _catalog(5, 50)
    trie = ItemTrie.from_token_ids(paths)
    wide = _labels(rng, paths, 20, 40, off_rate=0.0, holes=0.0)
    view = torch.cat([wide, wide], dim=1).to(backend)[:, :40]  # row stride 80
    got = _run(backend, trie, view, 0.1, 1)
    ig, zero, w, status = ref_label_weights(NumpyTrie(trie), wide, IGNORE, 0.1, 1)
    assert (status == 0).all() and got[3].tolist() == status.tolist()
    assert (got[1].numpy() == zero).all()
    np.testing.assert_allclose(got[2].numpy(), w)
    np.testing.assert_allclose(got[0].numpy(), ig)


@pytest.mark.parametrize("backend", ["cpu", CUDA])
@pytest.mark.parametrize("policy", [0, 1, 2])
def test_kernel_zero_weight_items_and_rows_leaving_the_trie(backend: str, policy: int) -> None:
    """The pure-Python reference decides every row: a zero-weight sibling makes 5 -> 6 zero-IG,
    and a row that leaves the trie after a walked prefix has IG 0 and no zero-IG flag anywhere,
    only the policy's weight on its completion."""
    paths, weights = [[5, 6, 8, 2], [5, 7, 2], [9, 2]], [3.0, 0.0, 1.0]
    trie = ItemTrie.from_token_ids(paths, weights)
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
    got = _run(backend, trie, labels, beta, policy)
    ref = ReferenceTrie(paths, weights)
    want = [reference_row_weights(ref, row, beta, OFF_TRIE[policy]) for row in rows]
    assert got[3].tolist() == [int(w[3]) for w in want] == [0, 0, 1, 1, 0, 0]
    np.testing.assert_allclose(got[0].numpy(), [w[0] for w in want], rtol=1e-6, atol=0)
    assert got[1].numpy().astype(bool).tolist() == [w[1] for w in want]
    np.testing.assert_array_equal(got[2].numpy(), np.array([w[2] for w in want], np.float32))
    assert got[1][0].tolist() == [0, 0, 1, 1, 1, 0, 0] and got[1][1].tolist() == [0] * 4 + [1, 0, 0]
    assert not got[1][2:4].any() and not got[0][2:4].any()
    _same_as_cpu(got, trie, labels, beta, policy)


# ------------------------------------------------------------------ public op, CUDA vs CPU
def _random_batch(seed: int, rows: int, cols: int, vocab: int = 64):
    """A random trie (paths, weights) and label rows, some of them leaving the trie."""
    rng = random.Random(seed)
    paths = sorted(
        {
            tuple(rng.randrange(3, vocab) for _ in range(rng.randint(1, 6))) + (2,)
            for _ in range(rng.randint(1, 200))
        }
    )
    weights = [float(rng.randint(1, 9)) for _ in paths]
    labels = torch.full((rows, cols), IGNORE, dtype=torch.int64)
    for r in range(rows):
        p = list(rng.choice(paths))[:cols]
        u = rng.random()
        if u < 0.2 and p:
            p[rng.randrange(len(p))] = rng.randrange(0, vocab)
        elif u < 0.3:
            p = p[: rng.randint(0, len(p))]
        elif u < 0.4:
            p = (p + [5])[:cols]
        s = rng.randint(0, cols - len(p))
        labels[r, s : s + len(p)] = torch.tensor(p, dtype=torch.int64)
    return paths, weights, labels


@pytest.mark.parametrize("policy", ["uniform", "ignore"])
@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (7, 13), (16, 512), (300, 40)])
@cuda_only
def test_cuda_matches_cpu(policy: str, rows: int, cols: int) -> None:
    """The public op on CUDA equals the CPU op bit for bit."""
    for seed in range(3):
        paths, weights, labels = _random_batch(seed * 1000 + rows + cols, rows, cols)
        trie = ItemTrie.from_token_ids(paths, weights, vocab_size=64)
        cpu = label_token_weights(labels, trie, 0.1, off_trie=policy)
        gpu = label_token_weights(labels.cuda(), trie.to("cuda"), 0.1, off_trie=policy)
        assert gpu.weight.is_cuda
        torch.testing.assert_close(gpu.weight.cpu(), cpu.weight, atol=0, rtol=0)
        assert torch.equal(gpu.row_status.cpu(), cpu.row_status)
        ok = cpu.row_status == 0  # IG / zero-IG are compared on rows that stay on the trie
        torch.testing.assert_close(gpu.info_gain.cpu()[ok], cpu.info_gain[ok], atol=0, rtol=0)
        assert torch.equal(gpu.zero_ig.cpu()[ok], cpu.zero_ig[ok])


@cuda_only
def test_cuda_strided_labels_and_error_policy() -> None:
    """A strided CUDA label view equals the CPU op; off_trie="error" raises on CUDA too."""
    paths, weights, labels = _random_batch(7, 8, 32)
    trie = ItemTrie.from_token_ids(paths, weights, vocab_size=64)
    wide = torch.full((8, 40), IGNORE, dtype=torch.int64)
    wide[:, 4:36] = labels
    view = wide.cuda()[:, 4:36]
    cpu = label_token_weights(labels, trie, 0.2)
    gpu = label_token_weights(view, trie.to("cuda"), 0.2)
    torch.testing.assert_close(gpu.weight.cpu(), cpu.weight, atol=0, rtol=0)
    if cpu.num_left_trie:
        with pytest.raises(LeftTrieError, match="row"):
            label_token_weights(view, trie.to("cuda"), 0.2, off_trie="error")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@cuda_only
def test_cuda_loss_matches_cpu(dtype: torch.dtype) -> None:
    """igd_loss on CUDA: float32 equals the CPU loss; bfloat16 errs against the float64 oracle
    at most twice as much as plain PyTorch's weighted cross-entropy in bfloat16."""
    paths, weights, labels = _random_batch(11, 16, 64)
    trie = ItemTrie.from_token_ids(paths, weights, vocab_size=64)
    logits = torch.randn(16, 64, 64, generator=torch.Generator().manual_seed(0)).to(dtype)
    cpu = igd_loss(logits, labels, trie, 0.1)
    x = logits.cuda().requires_grad_()
    gpu = igd_loss(x, labels.cuda(), trie.to("cuda"), 0.1)
    gpu.backward()
    assert torch.isfinite(x.grad).all()
    if dtype == torch.float32:
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
        return
    ref = ReferenceTrie(paths, weights)
    oracle = reference_igd_loss(logits.double().tolist(), labels.tolist(), ref, 0.1)
    w = label_token_weights(labels, trie, 0.1).weight[:, 1:].to(dtype).cuda()
    ce = functional.cross_entropy(
        x.detach()[:, :-1].transpose(1, 2), labels[:, 1:].cuda(), reduction="none"
    )  # bf16 in, bf16 out
    baseline = (w * ce).sum() / w.sum()
    assert_within_reference_error(gpu, baseline, torch.tensor(oracle, dtype=torch.float64))
