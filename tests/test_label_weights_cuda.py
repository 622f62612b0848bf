"""The CUDA label-weights op against the CPU op (skipped without a CUDA build and a GPU)."""

from __future__ import annotations

import random

import pytest
import torch

import igdbeam
from igdbeam import ItemTrie, igd_loss, label_token_weights
from igdbeam.errors import LeftTrieError

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not igdbeam.cuda_available(), reason="needs a CUDA build and a GPU"),
]

I = -100  # noqa: E741


def _random_batch(seed: int, rows: int, cols: int, vocab: int = 64):
    rng = random.Random(seed)
    paths = sorted(
        {
            tuple(rng.randrange(3, vocab) for _ in range(rng.randint(1, 6))) + (2,)
            for _ in range(rng.randint(1, 200))
        }
    )
    weights = [float(rng.randint(1, 9)) for _ in paths]
    labels = torch.full((rows, cols), I, dtype=torch.int64)
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
    return ItemTrie.from_token_ids(paths, weights, vocab_size=vocab), labels


@pytest.mark.parametrize("policy", ["uniform", "ignore"])
@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (7, 13), (16, 512), (300, 40)])
def test_cuda_matches_cpu(policy: str, rows: int, cols: int) -> None:
    for seed in range(3):
        trie, labels = _random_batch(seed * 1000 + rows + cols, rows, cols)
        cpu = label_token_weights(labels, trie, 0.1, off_trie=policy)
        gpu = label_token_weights(labels.cuda(), trie.to("cuda"), 0.1, off_trie=policy)
        assert gpu.weight.is_cuda
        torch.testing.assert_close(gpu.weight.cpu(), cpu.weight, atol=0, rtol=0)
        assert torch.equal(gpu.row_status.cpu(), cpu.row_status)
        ok = cpu.row_status == 0  # IG / zero-IG are compared on rows that stay on the trie
        torch.testing.assert_close(gpu.info_gain.cpu()[ok], cpu.info_gain[ok], atol=0, rtol=0)
        assert torch.equal(gpu.zero_ig.cpu()[ok], cpu.zero_ig[ok])


def test_cuda_strided_labels_and_error_policy() -> None:
    trie, labels = _random_batch(7, 8, 32)
    wide = torch.full((8, 40), I, dtype=torch.int64)
    wide[:, 4:36] = labels
    view = wide.cuda()[:, 4:36]
    cpu = label_token_weights(labels, trie, 0.2)
    gpu = label_token_weights(view, trie.to("cuda"), 0.2)
    torch.testing.assert_close(gpu.weight.cpu(), cpu.weight, atol=0, rtol=0)
    if cpu.num_left_trie:
        with pytest.raises(LeftTrieError, match="row"):
            label_token_weights(view, trie.to("cuda"), 0.2, off_trie="error")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_loss_matches_cpu(dtype: torch.dtype) -> None:
    trie, labels = _random_batch(11, 16, 64)
    logits = torch.randn(16, 64, 64, generator=torch.Generator().manual_seed(0)).to(dtype)
    cpu = igd_loss(logits, labels, trie, 0.1)
    x = logits.cuda().requires_grad_()
    gpu = igd_loss(x, labels.cuda(), trie.to("cuda"), 0.1)
    gpu.backward()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(gpu.cpu(), cpu, atol=tol, rtol=tol)
    assert torch.isfinite(x.grad).all()
