"""The IGD fine-tuning loss (spec section 3, Eq. 7-8) and the baselines under the same API.

All losses take the model's *unshifted* ``logits [B, L, V]`` and ``labels [B, L]`` (``-100`` on
prompt and padding positions), like ``transformers``' causal-LM loss: the labels are shifted left
by one (``shift_labels``) so that position ``t``'s logits predict ``labels[t + 1]``; the logits are
never sliced, copied or upcast as a whole (cross-entropy runs on a ``view`` of them and the
per-token losses are upcast to float32).

Normalisation (``num_items_in_batch``):

* ``None``: the reference behaviour, ``L = sum_t w_t CE_t / Omega`` with ``Omega = sum_t w_t`` over
  the micro-batch. With gradient accumulation the gradient then depends on how a batch is split.
* a number / 0-d tensor: the denominator shared by every micro-batch of one optimizer step, so that
  the accumulated gradient does not depend on the split. ``transformers.Trainer`` passes the
  number of completion tokens of the step; :class:`igdbeam.IGDTrainer` passes the sum of the
  weights of the step instead, which makes the accumulated loss equal to the reference loss of
  the whole step.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as nnf

from igdbeam.native.checks import check_non_negative, check_tensor
from igdbeam.ops.label_weights import (
    TokenWeights,
    check_labels,
    label_token_weights,
    positional_token_weights,
)

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie

__all__ = [
    "IGDLossOutput",
    "cft_loss",
    "igd_loss",
    "igd_loss_from_log_probs",
    "pos_loss",
    "shift_labels",
    "shifted_token_weights",
    "token_cross_entropy",
    "weighted_token_mean",
]

LOGIT_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


@dataclass(frozen=True)
class IGDLossOutput:
    """The pieces of a weighted loss, for logging and analysis (all detached).

    Attributes:
        loss: the scalar loss (the same value the loss function returns, detached).
        token_loss: float32 ``[B, L]`` per-token cross-entropy on the shifted positions, 0 off the
            completion.
        weight: float32 ``[B, L]`` per-token weight (aligned with ``token_loss``).
        denominator: float32 0-d tensor the weighted sum was divided by.
        token_weights: the IGD :class:`~igdbeam.ops.label_weights.TokenWeights`, aligned with
            ``token_loss`` (``None`` for the baselines).
    """

    loss: torch.Tensor
    token_loss: torch.Tensor
    weight: torch.Tensor
    denominator: torch.Tensor
    token_weights: TokenWeights | None = None


def shift_labels(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Return ``labels[:, 1:]`` padded on the right with ``ignore_index`` (same shape ``[B, L]``).

    Position ``t`` of the result is the label predicted by the logits at position ``t``.
    """
    check_tensor("labels", labels, ndim=2)
    return nnf.pad(labels[:, 1:], (0, 1), value=ignore_index)


def _shift_left(t: torch.Tensor, fill: float | bool) -> torch.Tensor:
    """``t[:, 1:]`` padded on the right with ``fill`` (same shape)."""
    if t.shape[1] == 0:
        return t
    out = torch.empty_like(t)
    out[:, :-1] = t[:, 1:]
    out[:, -1] = fill
    return out


def shifted_token_weights(tw: TokenWeights) -> TokenWeights:
    """Align the token weights of unshifted labels with the logits that predict them.

    The trie walk runs on the unshifted labels (so a completion that starts at position 0 is
    walked from its first token), then every per-token field moves left by one position.
    """
    return TokenWeights(
        _shift_left(tw.info_gain, 0.0),
        _shift_left(tw.zero_ig, False),
        _shift_left(tw.weight, 0.0),
        tw.row_status,
    )


def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor, name: str = "logits") -> None:
    check_tensor(name, logits, ndim=3, dtypes=LOGIT_FLOAT_DTYPES)
    check_tensor("labels", labels, ndim=2, dtypes=(torch.int64, torch.int32))
    if tuple(labels.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"labels have shape {tuple(labels.shape)} but {name} have shape "
            f"{tuple(logits.shape)}; expected labels [batch, seq_len] = {tuple(logits.shape[:2])}"
        )
    if labels.device != logits.device:
        raise ValueError(f"labels are on {labels.device} but {name} are on {logits.device}")


def token_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int = -100
) -> torch.Tensor:
    """Per-token cross-entropy ``[B, L]`` (float32, 0 where ``target == ignore_index``).

    ``target`` is aligned with ``logits`` (already shifted). The logits are viewed as
    ``[B * L, V]`` without a copy when contiguous; the log-softmax runs in the logits' dtype with
    float32 accumulation (PyTorch's kernels) and only the per-token losses are upcast. The label
    log-probabilities are gathered rather than computed by ``nll_loss(reduction="none")``, which
    is markedly slower on CPU.
    """
    B, L, V = logits.shape
    flat_target = target.reshape(B * L).to(torch.int64)
    if logits.is_cuda:
        # On GPUs the fused cross-entropy kernel (log-softmax + NLL, float32 accumulation)
        # saves the full-size log-softmax tensor and its backward.
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(B * L, V), flat_target, ignore_index=ignore_index, reduction="none"
        )
        return (nll if nll.dtype == torch.float64 else nll.float()).view(B, L)
    mask = flat_target != ignore_index
    log_probs = logits.reshape(B * L, V).log_softmax(-1)
    index = torch.where(mask, flat_target, torch.zeros((), dtype=torch.int64, device=mask.device))
    nll = -log_probs.gather(1, index[:, None])[:, 0]
    if nll.dtype != torch.float64:
        nll = nll.float()
    return torch.where(mask, nll, torch.zeros((), dtype=nll.dtype, device=nll.device)).view(B, L)


def weighted_token_mean(
    token_loss: torch.Tensor,
    weight: torch.Tensor,
    num_items_in_batch: int | float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(sum(weight * token_loss) / denominator, denominator)``.

    The denominator is ``sum(weight)`` (the micro-batch Omega) when ``num_items_in_batch`` is
    None, else ``num_items_in_batch``; a zero denominator gives a finite zero loss.
    """
    total = (weight * token_loss).sum()
    den = _denominator(weight.sum(), num_items_in_batch)
    return total / den, den.detach()


def _denominator(
    local: torch.Tensor, num_items_in_batch: int | float | torch.Tensor | None
) -> torch.Tensor:
    """``local`` (the micro-batch count) or ``num_items_in_batch``, a zero replaced by one."""
    if num_items_in_batch is None:
        den = local
    else:
        den = torch.as_tensor(num_items_in_batch, device=local.device).to(torch.float32)
        if den.dim() > 0:  # DataParallel passes one copy per GPU
            den = den.reshape(-1)[0]
    return torch.where(den > 0, den, torch.ones_like(den))


def _check_num_items(num_items_in_batch: int | float | torch.Tensor | None) -> None:
    if num_items_in_batch is None or isinstance(num_items_in_batch, torch.Tensor):
        return
    if not math.isfinite(float(num_items_in_batch)) or float(num_items_in_batch) < 0:
        raise ValueError(f"num_items_in_batch must be >= 0, got {num_items_in_batch!r}")


def _check_inputs(
    logits: torch.Tensor,
    labels: torch.Tensor,
    beta: float,
    num_items_in_batch: int | float | torch.Tensor | None,
    ignore_index: int,
    validate: bool,
) -> float:
    """The checks shared by the logits losses; return ``beta`` unchanged: the weight function
    the loss calls (:func:`label_token_weights` / :func:`positional_token_weights`) checks it."""
    _check_logits_labels(logits, labels)
    _check_num_items(num_items_in_batch)
    if validate:
        check_labels(labels, logits.shape[-1], ignore_index)
    return beta


def _weighted_loss(
    token_loss: torch.Tensor,
    weight: torch.Tensor,
    num_items_in_batch: int | float | torch.Tensor | None,
    return_output: bool,
    token_weights: TokenWeights | None = None,
) -> torch.Tensor | tuple[torch.Tensor, IGDLossOutput]:
    """The weighted mean of ``token_loss`` (:func:`weighted_token_mean`), with its
    :class:`IGDLossOutput` when ``return_output``."""
    loss, den = weighted_token_mean(token_loss, weight, num_items_in_batch)
    if not return_output:
        return loss
    return loss, IGDLossOutput(loss.detach(), token_loss.detach(), weight, den, token_weights)


def igd_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    trie: ItemTrie,
    beta: float = 0.1,
    *,
    ignore_index: int = -100,
    shift: bool = True,
    num_items_in_batch: int | float | torch.Tensor | None = None,
    off_trie: str = "uniform",
    validate: bool = True,
    return_output: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, IGDLossOutput]:
    """IGD-weighted token cross-entropy (spec Eq. 7-8).

    ``L = sum_t w_t CE_t / Omega`` where ``w_t = beta`` for zero-IG completion tokens and 1 for the
    others. ``beta = 1`` is plain token-mean cross-entropy.

    Args:
        logits: ``[B, L, V]`` float32 / bfloat16 / float16 (or float64) logits, not shifted.
        labels: int ``[B, L]`` labels, ``ignore_index`` on prompt and padding positions.
        trie: item trie on the logits' device.
        beta: weight of zero-IG tokens, in ``[0, 1]``.
        ignore_index: label value of non-completion positions.
        shift: True (default) when ``labels`` are the unshifted input labels (position ``t``'s
            logits predict ``labels[t + 1]``); False when already aligned with the logits.
        num_items_in_batch: None for the micro-batch Omega (reference); else the denominator
            shared by all micro-batches of a step (see the module docstring).
        off_trie: policy for completions that leave the trie: ``"uniform"`` (the reference:
            each of their tokens weighs ``beta``, which cancels out only when the whole
            micro-batch leaves the trie), ``"ignore"`` or ``"error"`` (see
            :func:`~igdbeam.ops.label_weights.label_token_weights`).
        validate: check that labels lie in ``[0, V)`` (one reduction, a host sync on GPU).
        return_output: also return an :class:`IGDLossOutput`.

    Returns:
        The float32 scalar loss, or ``(loss, IGDLossOutput)``.

    Raises:
        ValueError: shape / dtype / device mismatch, beta outside ``[0, 1]``, labels outside the
            vocabulary, or an off-trie completion with ``off_trie="error"``.
    """
    beta = _check_inputs(logits, labels, beta, num_items_in_batch, ignore_index, validate)
    tw = label_token_weights(
        labels, trie, beta, ignore_index=ignore_index, off_trie=off_trie, validate=False
    )
    if shift:
        tw = shifted_token_weights(tw)
    target = shift_labels(labels, ignore_index) if shift else labels
    ce = token_cross_entropy(logits, target, ignore_index=ignore_index)
    return _weighted_loss(ce, tw.weight, num_items_in_batch, return_output, tw)


def igd_loss_from_log_probs(
    log_probs: torch.Tensor,
    labels: torch.Tensor,
    trie: ItemTrie,
    beta: float = 0.1,
    *,
    ignore_index: int = -100,
    shift: bool = True,
    num_items_in_batch: int | float | torch.Tensor | None = None,
    off_trie: str = "uniform",
    validate: bool = True,
    return_output: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, IGDLossOutput]:
    """IGD loss from per-token label log-probabilities (e.g. TRL's fused LM head).

    Args:
        log_probs: float ``[B, T]`` log-probability of each predicted label (any value where the
            label is ``ignore_index``).
        labels: int labels: with ``shift=True`` (default, TRL's convention) the unshifted
            ``[B, T + 1]`` input labels, ``log_probs[:, t]`` scoring ``labels[:, t + 1]``; with
            ``shift=False`` labels ``[B, T]`` aligned with ``log_probs``.
        trie, beta, ignore_index, num_items_in_batch, off_trie, return_output: as in
            :func:`igd_loss`.
        validate: check the labels against the trie's vocabulary (a host sync on GPU).
    """
    check_tensor("log_probs", log_probs, ndim=2, dtypes=LOGIT_FLOAT_DTYPES)
    check_tensor("labels", labels, ndim=2, dtypes=(torch.int64, torch.int32))
    B, T = log_probs.shape
    expected = (B, T + 1) if shift else (B, T)
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"labels have shape {tuple(labels.shape)} but log_probs {tuple(log_probs.shape)}; "
            f"expected labels {expected} (shift={shift})"
        )
    _check_num_items(num_items_in_batch)
    tw = label_token_weights(
        labels, trie, beta, ignore_index=ignore_index, off_trie=off_trie, validate=validate
    )
    if shift:
        tw = TokenWeights(tw.info_gain[:, 1:], tw.zero_ig[:, 1:], tw.weight[:, 1:], tw.row_status)
        labels = labels[:, 1:]
    mask = labels != ignore_index
    nll = torch.where(mask, -log_probs.float(), torch.zeros((), device=log_probs.device))
    return _weighted_loss(nll, tw.weight, num_items_in_batch, return_output, tw)


def pos_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 0.1,
    *,
    ignore_index: int = -100,
    shift: bool = True,
    num_items_in_batch: int | float | torch.Tensor | None = None,
    validate: bool = True,
    return_output: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, IGDLossOutput]:
    """The "Pos" baseline: token CE weighted linearly from 1 (first completion token) to beta.

    Same arguments and normalisation as :func:`igd_loss`, without a trie (see
    :func:`~igdbeam.ops.label_weights.positional_token_weights`).
    """
    beta = _check_inputs(logits, labels, beta, num_items_in_batch, ignore_index, validate)
    target = shift_labels(labels, ignore_index) if shift else labels
    weight = positional_token_weights(target, beta, ignore_index=ignore_index)
    ce = token_cross_entropy(logits, target, ignore_index=ignore_index)
    return _weighted_loss(ce, weight, num_items_in_batch, return_output)


def resolve_cft_weight(cft_weight: float, alpha: float | None, where: str) -> float:
    """``cft_weight``, or the deprecated ``alpha`` keyword of ``where`` (with a
    DeprecationWarning): CFT's weight was called ``alpha``, the name of IGD's decoding strength.

    Raises:
        TypeError: both names given.
    """
    if alpha is None:
        return cft_weight
    if cft_weight != 1.0:
        raise TypeError(f"{where}: give cft_weight only (alpha is its deprecated name)")
    warnings.warn(
        f"{where}(alpha=...) is deprecated: CFT's weight is now called cft_weight (alpha is "
        "IGD's decoding strength)",
        DeprecationWarning,
        stacklevel=3,
    )
    return alpha


def cft_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    cf_logits: torch.Tensor,
    cf_labels: torch.Tensor,
    cft_weight: float = 1.0,
    *,
    ignore_index: int = -100,
    shift: bool = True,
    num_items_in_batch: int | float | torch.Tensor | None = None,
    validate: bool = True,
    alpha: float | None = None,
) -> torch.Tensor:
    """The "CFT" (counterfactual fine-tuning) baseline.

    ``L = CE(logits, y) + cft_weight * CE(logits - cf_logits, y)`` summed over the completion tokens
    and divided by their count (or ``num_items_in_batch``). ``cf_logits`` come from the same
    model on a copy of the prompt with the history removed (built by
    :class:`igdbeam.training.collators.CFTCollator`); the completion is the same tokens at other
    positions, so the completion positions of both are matched in order, row by row.

    Args:
        logits, labels: the real prompt's unshifted logits ``[B, L, V]`` and labels ``[B, L]``.
        cf_logits, cf_labels: the history-free prompt's ``[B, L', V]`` and ``[B, L']``.
        cft_weight: weight of the counterfactual term, ``>= 0``.
        ignore_index, shift, num_items_in_batch, validate: as in :func:`igd_loss`.
        alpha: deprecated name of ``cft_weight`` (warns).

    Raises:
        ValueError: shape / device mismatch, a negative ``cft_weight``, or completions that
            differ between the two prompts.
    """
    weight = check_non_negative("cft_weight", resolve_cft_weight(cft_weight, alpha, "cft_loss"))
    _check_logits_labels(logits, labels)
    _check_logits_labels(cf_logits, cf_labels, "cf_logits")
    _check_num_items(num_items_in_batch)
    V = logits.shape[-1]
    if cf_logits.shape[0] != logits.shape[0] or cf_logits.shape[-1] != V:
        raise ValueError(
            f"cf_logits {tuple(cf_logits.shape)} must have the batch size and vocabulary of "
            f"logits {tuple(logits.shape)}"
        )
    if validate:
        check_labels(labels, V, ignore_index)
        check_labels(cf_labels, V, ignore_index, name="cf_labels")
    target = shift_labels(labels, ignore_index) if shift else labels
    cf_target = shift_labels(cf_labels, ignore_index) if shift else cf_labels
    mask = target != ignore_index
    cf_mask = cf_target != ignore_index
    y = target[mask]
    if validate and (
        not torch.equal(mask.sum(1), cf_mask.sum(1)) or not torch.equal(y, cf_target[cf_mask])
    ):
        raise ValueError(
            "the completions of the real and the history-free prompts differ; build both with "
            "igdbeam.training.collators.CFTCollator so that each row has the same completion tokens"
        )
    ce = token_cross_entropy(logits, target, ignore_index=ignore_index)
    # Only the completion positions of both are gathered (a copy of those rows only).
    diff = logits.reshape(-1, V)[mask.reshape(-1)] - cf_logits.reshape(-1, V)[cf_mask.reshape(-1)]
    cf_ce = nnf.cross_entropy(diff, y.to(torch.int64), reduction="sum").float()
    total = ce.sum() + weight * cf_ce
    return total / _denominator(mask.sum().to(torch.float32), num_items_in_batch)
