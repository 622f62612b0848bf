"""The IGD loss and the baselines against the pure-Python reference."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as nnf
from hypothesis import given, settings
from hypothesis import strategies as st

from igdbeam import ItemTrie, cft_loss, igd_loss, igd_loss_from_log_probs, pos_loss
from igdbeam.training.loss import shift_labels
from oracles.loss import (
    IGNORE,
    reference_cft_loss,
    reference_igd_loss,
    reference_positional_weights,
    reference_row_weights,
    reference_shift,
    reference_weighted_loss,
)
from oracles.trie import ReferenceTrie

I = IGNORE  # noqa: E741
PATHS = [[10, 11, 12, 2], [10, 11, 13, 2], [10, 14, 2], [20, 21, 2]]
WEIGHTS = [4.0, 2.0, 1.0, 1.0]
V = 24


@pytest.fixture(scope="module")
def trie() -> ItemTrie:
    return ItemTrie.from_token_ids(PATHS, WEIGHTS, vocab_size=V)


@pytest.fixture(scope="module")
def ref() -> ReferenceTrie:
    return ReferenceTrie(PATHS, WEIGHTS)


# Unshifted labels: prompt positions -100, then the item path (position t predicts labels[t+1]).
LABELS = torch.tensor(
    [
        [I, I, 10, 11, 12, 2, I, I],  # A: weights 1 1 1 beta
        [I, 20, 21, 2, I, I, I, I],  # D: weights 1 beta beta
        [I, I, I, 10, 14, 2, I, I],  # C: weights 1 1 beta
    ]
)


def _logits(seed: int, shape=(3, 8, V), dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(shape, generator=g)).to(dtype)


def _ref_loss(logits: torch.Tensor, labels: torch.Tensor, ref: ReferenceTrie, beta, **kw) -> float:
    return reference_igd_loss(logits.double().tolist(), labels.tolist(), ref, beta, **kw)


def test_hand_made_batch_exact(trie: ItemTrie) -> None:
    """Literal weights of the worked example; the loss is sum w CE / sum w with those weights."""
    logits = _logits(0).requires_grad_()
    loss, out = igd_loss(logits, LABELS, trie, 0.1, return_output=True)
    w = [
        [0, 1, 1, 1, 0.1, 0, 0, 0],
        [1, 0.1, 0.1, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 0.1, 0, 0, 0],
    ]
    torch.testing.assert_close(out.weight, torch.tensor(w), atol=1e-7, rtol=0)
    assert out.denominator.item() == pytest.approx(1 + 1 + 1 + 0.1 + 1 + 0.1 + 0.1 + 1 + 1 + 0.1)
    target = LABELS[:, 1:]
    ce = nnf.cross_entropy(logits[:, :-1].reshape(-1, V), target.reshape(-1), reduction="none")
    wt = torch.tensor(w)[:, :-1].reshape(-1)
    expected = (wt * ce).sum() / wt.sum()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(
        out.token_loss[:, :-1].reshape(-1), ce.detach() * (target.reshape(-1) != I)
    )


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("num_items", [None, 7, 11.5])
def test_against_reference(trie, ref, beta: float, num_items) -> None:
    logits = _logits(1)
    loss = igd_loss(logits, LABELS, trie, beta, num_items_in_batch=num_items)
    expected = _ref_loss(logits, LABELS, ref, beta, num_items_in_batch=num_items)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_beta_one_is_token_mean_cross_entropy(trie: ItemTrie) -> None:
    from transformers.loss.loss_utils import ForCausalLMLoss

    logits = _logits(2)
    labels = LABELS.clone()
    labels[2, 3:6] = torch.tensor([10, 30 % V, 2])  # a row that leaves the trie counts too
    plain = nnf.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(igd_loss(logits, labels, trie, 1.0), plain)
    # and with the Trainer's global token count, it is transformers' own causal-LM loss
    n = int((labels[:, 1:] != I).sum()) + 5
    hf = ForCausalLMLoss(logits, labels, V, num_items_in_batch=torch.tensor(n))
    torch.testing.assert_close(igd_loss(logits, labels, trie, 1.0, num_items_in_batch=n), hf)


def test_gradient_gradcheck(trie: ItemTrie) -> None:
    logits = _logits(3, shape=(3, 8, 6 + 18)).double().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: igd_loss(x, LABELS, trie, 0.3), (logits,), eps=1e-6, atol=1e-6
    )


def test_gradient_is_weighted_softmax_minus_onehot(trie: ItemTrie) -> None:
    """d L / d logits_t = w_t (softmax(logits_t) - onehot(y_t)) / Omega."""
    beta = 0.2
    logits = _logits(4).requires_grad_()
    igd_loss(logits, LABELS, trie, beta).backward()
    target = reference_shift(LABELS.tolist())
    r = ReferenceTrie(PATHS, WEIGHTS)
    w = torch.tensor([reference_row_weights(r, row, beta)[2] for row in target])
    onehot = torch.zeros_like(logits)
    t = torch.tensor(target)
    onehot[t != I] = nnf.one_hot(t[t != I], V).float()
    expected = w[..., None] * (logits.detach().softmax(-1) - onehot) / w.sum()
    torch.testing.assert_close(logits.grad, expected, atol=1e-6, rtol=1e-5)


def test_accumulation_split_invariance(trie: ItemTrie) -> None:
    """Global normalisation: the summed micro-batch gradients equal the full-batch gradient."""
    beta = 0.1
    logits = _logits(5).requires_grad_()
    full = igd_loss(logits, LABELS, trie, beta)
    full.backward()
    g_full = logits.grad.clone()
    # the denominator of the step: the weight sum over all micro-batches (what IGDTrainer passes)
    omega = igd_loss(logits, LABELS, trie, beta, return_output=True)[1].denominator
    for split in ([1, 2], [2, 1], [1, 1, 1]):
        logits.grad = None
        total = torch.zeros(())
        for chunk_logits, chunk_labels in zip(
            logits.split(split), LABELS.split(split), strict=True
        ):
            part = igd_loss(chunk_logits, chunk_labels, trie, beta, num_items_in_batch=omega)
            part.backward()
            total = total + part.detach()
        torch.testing.assert_close(total, full.detach())
        torch.testing.assert_close(logits.grad, g_full)
    # the micro-batch Omega (reference) is not split invariant: the test can tell them apart
    logits.grad = None
    for chunk_logits, chunk_labels in zip(logits.split([1, 2]), LABELS.split([1, 2]), strict=True):
        igd_loss(chunk_logits, chunk_labels, trie, beta).backward()
    assert not torch.allclose(logits.grad, g_full)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(trie: ItemTrie, ref: ReferenceTrie, dtype: torch.dtype) -> None:
    """flash-attention's rule: error vs fp32 at most twice plain PyTorch's in the same dtype."""
    big = torch.tensor([[I] * 20 + row.tolist() for row in LABELS] * 4)
    logits32 = _logits(6, shape=(*big.shape, V))
    low = logits32.to(dtype).requires_grad_()
    exact = _ref_loss(low.detach(), big, ref, 0.1)
    err = abs(igd_loss(low, big, trie, 0.1).item() - exact)
    # plain PyTorch in the same dtype: CE in `dtype`, weighted mean with the same weights
    target = shift_labels(big)
    ce_low = nnf.cross_entropy(low.detach().reshape(-1, V), target.reshape(-1), reduction="none")
    _, out = igd_loss(low.detach().float(), big, trie, 0.1, return_output=True)
    w = out.weight.reshape(-1).to(dtype)
    plain = ((w * ce_low).sum() / w.sum()).item()
    assert err <= 2 * abs(plain - exact) + 1e-6
    loss = igd_loss(low, big, trie, 0.1)
    loss.backward()
    assert loss.dtype == torch.float32 and low.grad.dtype == dtype


def test_no_copy_of_the_logits_is_saved(trie: ItemTrie) -> None:
    """Autograd keeps at most one logits-sized tensor (the log-softmax): no fp32 upcast copy."""
    logits = _logits(7, shape=(4, 64, 512), dtype=torch.bfloat16).requires_grad_()
    labels = torch.full((4, 64), I)
    labels[:, 10:14] = torch.tensor([10, 11, 12, 2])
    saved: dict[int, int] = {}  # storage address -> bytes (one storage may be saved twice)

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = igd_loss(logits, labels, trie, 0.1)
    logits_bytes = logits.numel() * logits.element_size()
    big = [s for s in saved.values() if s >= logits_bytes // 2]
    assert sum(big) <= logits_bytes, (saved, logits_bytes)
    assert max(big) == logits_bytes  # the bf16 log-softmax, not an fp32 copy
    loss.backward()


def test_from_log_probs_matches(trie: ItemTrie) -> None:
    logits = _logits(8)
    labels = LABELS.clone()
    labels[2] = torch.tensor([10, 14, 2, I, I, I, I, I])  # completion from position 0
    target = labels[:, 1:]
    lp = logits[:, :-1].log_softmax(-1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
    lp = torch.where(target != I, lp, torch.zeros(()))
    for n in (None, 9):
        b = igd_loss(logits, labels, trie, 0.1, num_items_in_batch=n)
        torch.testing.assert_close(
            igd_loss_from_log_probs(lp, labels, trie, 0.1, num_items_in_batch=n), b
        )
    t0 = LABELS[:, 1:]
    lp0 = logits[:, :-1].log_softmax(-1).gather(-1, t0.clamp(min=0)[..., None])[..., 0]
    aligned = igd_loss_from_log_probs(lp0, t0, trie, 0.1, shift=False)
    torch.testing.assert_close(aligned, igd_loss(logits, LABELS, trie, 0.1))
    with pytest.raises(ValueError, match=r"expected labels \(3, 8\)"):
        igd_loss_from_log_probs(lp, target, trie, 0.1)


def test_completion_starting_at_position_zero(trie: ItemTrie, ref: ReferenceTrie) -> None:
    """The walk starts at the first completion token even when no logits predict it."""
    labels = torch.tensor([[10, 14, 2, I], [20, 21, 2, I]])
    logits = _logits(14, shape=(2, 4, V))
    _, out = igd_loss(logits, labels, trie, 0.1, return_output=True)
    # predicted tokens: 14 (IG 0.693, weight 1), 2 (zero IG); 21, 2 (both zero IG)
    torch.testing.assert_close(
        out.weight, torch.tensor([[1, 0.1, 0, 0], [0.1, 0.1, 0, 0]]), atol=1e-7, rtol=0
    )
    assert out.token_weights.row_status.tolist() == [0, 0]
    expected = _ref_loss(logits, labels, ref, 0.1)
    assert igd_loss(logits, labels, trie, 0.1).item() == pytest.approx(expected, rel=1e-5)


def test_pos_loss_against_reference() -> None:
    logits = _logits(9)
    target = reference_shift(LABELS.tolist())
    w = [reference_positional_weights(row, 0.3) for row in target]
    expected = reference_weighted_loss(logits.double().tolist(), target, w)
    assert pos_loss(logits, LABELS, 0.3).item() == pytest.approx(expected, rel=1e-5)
    plain = nnf.cross_entropy(logits[:, :-1].reshape(-1, V), LABELS[:, 1:].reshape(-1))
    torch.testing.assert_close(pos_loss(logits, LABELS, 1.0), plain)


def test_cft_loss_against_reference() -> None:
    logits = _logits(10).requires_grad_()
    # the history-free prompt is shorter: the completion sits at other positions
    cf_labels = torch.tensor([[I, 10, 11, 12, 2, I], [I, 20, 21, 2, I, I], [I, 10, 14, 2, I, I]])
    cf_logits = _logits(11, shape=(3, 6, V)).requires_grad_()
    loss = cft_loss(logits, LABELS, cf_logits, cf_labels, 0.5)
    expected = reference_cft_loss(
        logits.double().tolist(),
        LABELS.tolist(),
        cf_logits.double().tolist(),
        cf_labels.tolist(),
        0.5,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert cf_logits.grad is not None and cf_logits.grad.abs().sum() > 0
    plain = nnf.cross_entropy(logits.detach()[:, :-1].reshape(-1, V), LABELS[:, 1:].reshape(-1))
    torch.testing.assert_close(cft_loss(logits, LABELS, cf_logits, cf_labels, 0.0), plain)
    bad = cf_labels.clone()
    bad[0, 2] = 13
    with pytest.raises(ValueError, match="completions of the real and the history-free"):
        cft_loss(logits, LABELS, cf_logits, bad, 0.5)
    for bad_alpha in (-1.0, float("nan"), float("inf"), True, "0.5", None):
        with pytest.raises(ValueError, match="cft_weight must be a (finite )?number >= 0"):
            cft_loss(logits, LABELS, cf_logits, cf_labels, bad_alpha)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), beta=st.sampled_from([0.0, 0.1, 0.7, 1.0]))
def test_random_against_reference(seed: int, beta: float) -> None:
    rng = random.Random(seed)
    paths = sorted(
        {
            tuple(rng.randrange(3, 9) for _ in range(rng.randint(1, 4))) + (2,)
            for _ in range(rng.randint(1, 8))
        }
    )
    r = ReferenceTrie(paths)
    t = ItemTrie.from_token_ids(paths, vocab_size=10)
    B, L = rng.randint(1, 4), rng.randint(2, 9)
    rows = []
    for _ in range(B):
        p = list(rng.choice(paths))[: L - 1]
        if rng.random() < 0.3:
            p[-1] = rng.randrange(0, 10)
        s = rng.randint(0, L - len(p))
        row = [I] * L
        row[s : s + len(p)] = p
        rows.append(row)
    labels = torch.tensor(rows)
    logits = torch.randn(B, L, 10, generator=torch.Generator().manual_seed(seed))
    for policy in ("uniform", "ignore"):
        loss = igd_loss(logits, labels, t, beta, off_trie=policy)
        expected = reference_igd_loss(logits.double().tolist(), rows, r, beta, off_trie=policy)
        assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_zero_denominator_is_finite_zero(trie: ItemTrie) -> None:
    logits = _logits(12).requires_grad_()
    labels = torch.full_like(LABELS, I)
    loss = igd_loss(logits, labels, trie, 0.1)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_bad_input(trie: ItemTrie) -> None:
    logits = _logits(13)
    with pytest.raises(ValueError, match=r"labels have shape \(3, 7\) but logits"):
        igd_loss(logits, LABELS[:, :7], trie, 0.1)
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 1\]"):
        igd_loss(logits, LABELS, trie, 1.01)
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 1\]"):
        pos_loss(logits, LABELS, -0.5)
    bad = LABELS.clone()
    bad[1, 2] = V
    with pytest.raises(ValueError, match=rf"labels\[1, 2\] = {V} .* \[0, {V}\)"):
        igd_loss(logits, bad, trie, 0.1)
    with pytest.raises(ValueError, match="3 dimensions"):
        igd_loss(logits[0], LABELS[0], trie, 0.1)
    with pytest.raises(ValueError, match="dtype"):
        igd_loss(logits.long(), LABELS, trie, 0.1)
    with pytest.raises(ValueError, match="num_items_in_batch"):
        igd_loss(logits, LABELS, trie, 0.1, num_items_in_batch=-1)
    off = LABELS.clone()
    off[0, 3] = 14
    with pytest.raises(ValueError, match=r"row\(s\) \[0\]"):
        igd_loss(logits, off, trie, 0.1, off_trie="error")
