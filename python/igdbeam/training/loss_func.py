"""The IGD loss as a ``compute_loss_func(outputs, labels, num_items_in_batch)`` object.

:class:`IGDLossFunc` picks the token weights of a loss mode (IGD, Pos, plain CE or CFT), computes
the loss from full logits or from per-token log-probs, and feeds the metrics of
:mod:`igdbeam.training.loss_metrics`. :func:`make_compute_loss_func` builds one for a stock
``transformers.Trainer``: it honours ``num_items_in_batch`` (the step's completion-token count),
so gradients do not grow with gradient accumulation (when ``compute_loss_func`` is set, the
Trainer does not divide by the accumulation steps). Under data parallelism it gives the loss of
the whole global batch when ``average_tokens_across_devices=True`` (the default of recent
transformers: the Trainer gathers the token count and multiplies the loss by the process count).

Every loss mode is one weighted token mean: the weights of a micro-batch
(:class:`MicroBatchWeights`, one native label-weights call for IGD) are computed once, and the
trainers hand the ones they already computed for the step's denominator to the loss instead of
walking the trie a second time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as nnf

from igdbeam.native.checks import check_tensor, check_unit_interval
from igdbeam.ops.label_weights import (
    OFF_TRIE_POLICIES,
    TokenWeights,
    check_labels,
    checked_label_token_weights,
    positional_token_weights,
)
from igdbeam.training.loss import (
    cft_loss,
    resolve_cft_weight,
    shift_labels,
    token_cross_entropy,
    weighted_token_mean,
)
from igdbeam.training.loss_metrics import IGSplitLossStats, LeftTrieRowCounter

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie

__all__ = ["LOSS_KINDS", "IGDLossFunc", "MicroBatchWeights", "make_compute_loss_func"]

LOSS_KINDS = ("igd", "pos", "ce", "cft")


@dataclass(frozen=True)
class MicroBatchWeights:
    """The token weights of one micro-batch (:meth:`IGDLossFunc.micro_batch_weights`).

    Attributes:
        weight: float32 ``[B, L - 1]``, the weight of each predicted token ``labels[:, 1:]`` of
            the unshifted labels ``[B, L]`` (0 off the completion).
        token_weights: for ``"igd"``, the :class:`~igdbeam.ops.label_weights.TokenWeights` of the
            unshifted labels (information gain, zero-IG flags, rows that left the trie); None for
            the baselines.
    """

    weight: torch.Tensor
    token_weights: TokenWeights | None = None

    def fits(self, labels: torch.Tensor) -> bool:
        """Whether these weights have the shape of the weights of ``labels`` (unshifted)."""
        return labels.dim() == 2 and tuple(self.weight.shape) == (
            labels.shape[0],
            max(labels.shape[1] - 1, 0),
        )

    def to(self, device: torch.device) -> MicroBatchWeights:
        """These weights on ``device`` (the same object when they are there already)."""
        if self.weight.device == device:
            return self
        tw = self.token_weights
        if tw is not None:
            tw = TokenWeights(
                tw.info_gain.to(device),
                tw.zero_ig.to(device),
                tw.weight.to(device),
                tw.row_status.to(device),
            )
        return MicroBatchWeights(self.weight.to(device), tw)


class IGDLossFunc:
    """A ``compute_loss_func(outputs, labels, num_items_in_batch)`` for ``transformers.Trainer``.

    ``labels`` are the unshifted input labels (the loss shifts them). One instance may serve one
    trainer at a time; it moves the trie to the logits' device on first use and caches it.
    While :meth:`start_collecting` is active it also accumulates (detached) the summed token loss
    and count of zero-IG and of positive-IG completion tokens
    (:class:`~igdbeam.training.loss_metrics.IGSplitLossStats`).

    Args:
        trie: the item trie (needed for ``"igd"`` and for the zero-IG / positive-IG statistics).
        beta: weight of zero-IG tokens (``"igd"``) or of the last token (``"pos"``).
        loss: ``"igd"``, ``"pos"``, ``"ce"`` (plain token-mean CE) or ``"cft"``.
        cft_weight: weight of the counterfactual term (``"cft"`` only), ``>= 0``.
        ignore_index: label value of non-completion positions.
        off_trie: policy for completions that leave the trie (see ``label_token_weights``).
        validate: check that labels lie in the vocabulary ``"always"``, only on the ``"first"``
            call (default: the check costs a host sync per call on GPU, and CUDA's
            cross-entropy asserts on bad labels anyway) or ``"never"``.

    Training with ``"igd"`` also counts, on the device and without synchronising, the rows whose
    completion left the trie; :meth:`pop_left_trie_rows` reads and resets the count (the trainers
    log it as ``igd_left_trie_rows``).

    Every mode is the weighted token mean ``sum w CE / den`` with the weights of
    :meth:`micro_batch_weights`; a caller that already has them (the trainers compute them once per
    micro-batch for the step's denominator) passes them as ``weights=`` or sets
    :attr:`pending_weights` for the next call, so the trie is walked once per micro-batch.
    """

    def __init__(
        self,
        trie: ItemTrie | None,
        beta: float = 0.1,
        *,
        loss: str = "igd",
        cft_weight: float = 1.0,
        ignore_index: int = -100,
        off_trie: str = "uniform",
        validate: str = "first",
        alpha: float | None = None,
    ) -> None:
        """Validate the options; see the class docstring (``alpha``: deprecated name of
        ``cft_weight``, warns)."""
        if loss not in LOSS_KINDS:
            raise ValueError(f"loss must be one of {LOSS_KINDS}, got {loss!r}")
        if loss == "igd" and trie is None:
            raise ValueError("loss='igd' needs a trie")
        if off_trie not in OFF_TRIE_POLICIES:
            raise ValueError(
                f"off_trie must be one of {sorted(OFF_TRIE_POLICIES)}, got {off_trie!r}"
            )
        if validate not in ("always", "first", "never"):
            raise ValueError(f"validate must be 'always', 'first' or 'never', got {validate!r}")
        self.validate = validate
        self._validated = False
        self._left_rows = LeftTrieRowCounter()
        self.trie = trie
        self.beta = check_unit_interval("beta", beta)
        self.kind = loss
        # Checked once, by cft_loss (the function that uses it).
        self.cft_weight = float(resolve_cft_weight(cft_weight, alpha, "IGDLossFunc"))
        self.ignore_index = int(ignore_index)
        self.off_trie = off_trie
        self.pending_cf_outputs: Any = None
        self.pending_weights: MicroBatchWeights | None = None
        self._ig_split = IGSplitLossStats()

    # ------------------------------------------------------------------ helpers
    def trie_on(self, device: torch.device) -> ItemTrie:
        """Return the trie on ``device`` (moved once, then cached)."""
        assert self.trie is not None
        if self.trie.device != device:
            self.trie = self.trie.to(device)
        return self.trie

    def micro_batch_weights(self, labels: torch.Tensor) -> MicroBatchWeights:
        """The token weights of one micro-batch of unshifted labels ``[B, L]`` (one trie walk).

        IGD walks the unshifted labels with the native op, so a completion starting at position
        0 is walked from its first token; ``"pos"`` runs from 1 on the first predicted completion
        token; ``"ce"`` and ``"cft"`` weigh every completion token 1.
        """
        check_tensor("labels", labels, ndim=2, dtypes=(torch.int64, torch.int32))
        target = labels[:, 1:]
        if self.kind == "igd":
            tw = checked_label_token_weights(  # self.beta was checked in __init__
                labels,
                self.trie_on(labels.device),
                self.beta,
                ignore_index=self.ignore_index,
                off_trie=self.off_trie,
                validate=False,
            )
            return MicroBatchWeights(tw.weight[:, 1:], tw)
        if self.kind == "pos":
            return MicroBatchWeights(
                positional_token_weights(target, self.beta, ignore_index=self.ignore_index)
            )
        return MicroBatchWeights((target != self.ignore_index).to(torch.float32))

    def token_weights(self, labels: torch.Tensor) -> torch.Tensor:
        """Weights ``[B, L - 1]`` of the predicted tokens ``labels[:, 1:]`` (unshifted labels)."""
        return self.micro_batch_weights(labels).weight

    def step_denominator(self, labels: list[torch.Tensor]) -> torch.Tensor:
        """Sum of this loss's token weights over the micro-batches (unshifted labels) of a step."""
        return sum(self.token_weights(t).sum() for t in labels)  # type: ignore[return-value]

    def _take_weights(
        self, labels: torch.Tensor, weights: MicroBatchWeights | None
    ) -> MicroBatchWeights:
        """``weights`` (else :attr:`pending_weights`, which this clears) when they fit ``labels``,
        on the labels' device; otherwise the weights computed now."""
        pending, self.pending_weights = self.pending_weights, None
        if weights is not None:
            if not weights.fits(labels):
                raise ValueError(
                    f"weights of shape {tuple(weights.weight.shape)} do not belong to labels of "
                    f"shape {tuple(labels.shape)} (expected [B, L - 1])"
                )
            return weights.to(labels.device)
        if pending is not None and pending.fits(labels):
            return pending.to(labels.device)
        return self.micro_batch_weights(labels)

    def _weighted_mean(
        self,
        token_loss: torch.Tensor,
        weight: torch.Tensor,
        weights: MicroBatchWeights,
        labels: torch.Tensor,
        num_items_in_batch: int | float | torch.Tensor | None,
    ) -> torch.Tensor:
        """``sum weight * token_loss / den`` (``token_loss[:, t]`` scores ``labels[:, t + 1]``),
        feeding the left-trie count and the zero-IG / positive-IG statistics."""
        loss, _ = weighted_token_mean(token_loss, weight, num_items_in_batch)
        self._count_left(weights.token_weights)
        self._collect(token_loss, labels)
        return loss

    def _check_now(self) -> bool:
        """Whether this call validates the labels (see ``validate``)."""
        if self.validate == "always" or (self.validate == "first" and not self._validated):
            self._validated = True
            return True
        return False

    # ------------------------------------------------------------------ metrics
    def _count_left(self, token_weights: TokenWeights | None) -> None:
        """Count training rows that left the trie (evaluation batches are not counted)."""
        if not self._ig_split.active:
            self._left_rows.add(token_weights)

    def pop_left_trie_rows(self) -> int | None:
        """Rows whose completion left the trie since the last call (None: no IGD loss ran)."""
        return self._left_rows.pop()

    def start_collecting(self) -> None:
        """Reset and start accumulating zero-IG / positive-IG token-loss statistics."""
        self._ig_split.start()

    def stop_collecting(self) -> torch.Tensor | None:
        """Stop collecting; return ``[sum_loss_zero, n_zero, sum_loss_pos, n_pos]`` or None."""
        return self._ig_split.stop()

    def _collect(self, token_loss: torch.Tensor, labels: torch.Tensor) -> None:
        """Accumulate the statistics; ``token_loss[:, t]`` is the loss of ``labels[:, t + 1]``."""
        if self._ig_split.active and self.trie is not None:
            trie = self.trie_on(labels.device)
            self._ig_split.add(token_loss, labels, trie, self.ignore_index)

    # ------------------------------------------------------------------ the loss
    def __call__(
        self,
        outputs: Any,
        labels: torch.Tensor,
        num_items_in_batch: int | float | torch.Tensor | None = None,
        *,
        weights: MicroBatchWeights | None = None,
    ) -> torch.Tensor:
        """Compute the loss from the model outputs (``outputs.logits``) and unshifted labels.

        ``weights``: this micro-batch's :meth:`micro_batch_weights` when the caller has them
        (else :attr:`pending_weights` when set and of the right shape, else computed here).
        """
        if labels is None:
            raise ValueError("the IGD loss needs labels; the batch has none")
        check_num_items_in_batch(num_items_in_batch, values=self.validate != "never")
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs.logits
        labels = labels.to(logits.device)
        target = shift_labels(labels, self.ignore_index)
        common: dict[str, Any] = {
            "ignore_index": self.ignore_index,
            "num_items_in_batch": num_items_in_batch,
            "validate": self._check_now(),
        }
        if self.kind == "cft":
            self.pending_weights = None
            cf = self.pending_cf_outputs
            self.pending_cf_outputs = None
            if cf is None:
                raise ValueError(
                    "loss='cft' needs the history-free prompt: use IGDTrainer with "
                    "igdbeam.CFTCollator (batch keys cf_input_ids, cf_attention_mask, cf_labels)"
                )
            cf_logits, cf_labels = cf
            loss = cft_loss(
                logits, labels, cf_logits, cf_labels.to(logits.device), self.cft_weight, **common
            )
            if self._ig_split.active:
                self._collect(
                    token_cross_entropy(logits, target, ignore_index=self.ignore_index), labels
                )
            return loss
        check_tensor("logits", logits, ndim=3)
        if tuple(labels.shape) != tuple(logits.shape[:2]):
            raise ValueError(
                f"labels have shape {tuple(labels.shape)} but logits have shape "
                f"{tuple(logits.shape)}; expected labels [batch, seq_len] = "
                f"{tuple(logits.shape[:2])}"
            )
        mbw = self._take_weights(labels, weights)
        if common["validate"]:
            check_labels(labels, logits.shape[-1], self.ignore_index)
        ce = token_cross_entropy(logits, target, ignore_index=self.ignore_index)
        # weight[:, t] belongs to labels[:, t + 1], i.e. to the logits at t (the last has none)
        weight = nnf.pad(mbw.weight, (0, 1))
        return self._weighted_mean(ce, weight, mbw, labels, num_items_in_batch)

    def loss_from_log_probs(
        self,
        log_probs: torch.Tensor,
        labels: torch.Tensor,
        num_items_in_batch: int | float | torch.Tensor | None = None,
        *,
        weights: MicroBatchWeights | None = None,
    ) -> torch.Tensor:
        """The loss from per-token log-probs ``[B, L - 1]`` of unshifted labels ``[B, L]``.

        ``log_probs[:, t]`` is the log-probability of ``labels[:, t + 1]`` (TRL's fused LM head);
        ``weights`` as in :meth:`__call__`.
        """
        if self.kind == "cft":
            raise ValueError("loss='cft' needs full logits; use IGDTrainer")
        check_num_items_in_batch(num_items_in_batch, values=self.validate != "never")
        check_tensor("log_probs", log_probs, ndim=2)
        labels = labels.to(log_probs.device)
        if labels.dim() != 2 or tuple(log_probs.shape) != (labels.shape[0], labels.shape[1] - 1):
            raise ValueError(
                f"log_probs have shape {tuple(log_probs.shape)} but labels {tuple(labels.shape)}; "
                "expected log_probs [B, L - 1] for labels [B, L]"
            )
        mbw = self._take_weights(labels, weights)
        if self._check_now():
            vocab = self.trie.vocab_size if self.trie is not None else None
            check_labels(labels, vocab, self.ignore_index)
        nll = torch.where(labels[:, 1:] != self.ignore_index, -log_probs.float(), 0.0)
        return self._weighted_mean(nll, mbw.weight, mbw, labels, num_items_in_batch)


def check_num_items_in_batch(
    value: int | float | torch.Tensor | None, *, values: bool = True
) -> None:
    """Check the Trainer's ``num_items_in_batch`` (the loss's denominator), whatever its type.

    ``None``, a Python / numpy number, or a real tensor of one value (a 1-D tensor of copies
    under DataParallel) that is finite and ``>= 0``. A bool, a string, a complex or bool tensor,
    NaN, infinity or a negative count is refused (``weighted_token_mean`` would otherwise
    replace it by 1 or divide by it silently). The values of a tensor on an accelerator are read
    only when ``values`` is True (a host synchronisation); CPU tensors are always read.

    Raises:
        ValueError: a value that is not a finite count ``>= 0`` (names it).
    """
    if value is None:
        return
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex() or value.dim() > 1 or value.numel() < 1:
            raise ValueError(
                "num_items_in_batch must be a finite count >= 0, got a "
                f"{value.dtype} tensor of shape {tuple(value.shape)}"
            )
        if value.device.type != "cpu" and not values:
            return
        flat = value.detach().reshape(-1).double()
        if not bool(torch.isfinite(flat).all()) or bool((flat < 0).any()):
            raise ValueError(f"num_items_in_batch must be a finite count >= 0, got {flat.tolist()}")
        return
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise ValueError(f"num_items_in_batch must be a finite count >= 0, got {value!r}")
    if isinstance(value, complex | np.complexfloating) or not math.isfinite(float(value)):
        raise ValueError(f"num_items_in_batch must be a finite count >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"num_items_in_batch must be a finite count >= 0, got {value!r}")


def make_compute_loss_func(
    trie: ItemTrie | None,
    beta: float = 0.1,
    *,
    loss: str = "igd",
    ignore_index: int = -100,
    off_trie: str = "uniform",
    validate: str = "first",
) -> IGDLossFunc:
    """Return a ``compute_loss_func`` for ``transformers.Trainer(compute_loss_func=...)``.

    The function is ``f(outputs, labels, num_items_in_batch)``: it shifts the labels itself and
    divides by ``num_items_in_batch`` when the Trainer passes it (the step's completion-token
    count), so the gradient is independent of gradient accumulation. With a stock Trainer the
    loss is therefore ``sum w CE / N_tokens``; :class:`~igdbeam.IGDTrainer` divides by the
    step's weight sum instead (the reference ``Omega``). ``loss`` is ``"igd"``, ``"pos"`` or
    ``"ce"`` (``"cft"`` needs :class:`~igdbeam.IGDTrainer`); ``off_trie`` and ``validate`` are
    as in :class:`IGDLossFunc`.
    """
    if loss == "cft":
        raise ValueError("loss='cft' needs a second forward pass; use igdbeam.IGDTrainer")
    return IGDLossFunc(
        trie, beta, loss=loss, ignore_index=ignore_index, off_trie=off_trie, validate=validate
    )
