"""The IGD loss as a ``compute_loss_func(outputs, labels, num_items_in_batch)`` object.

:class:`IGDLossFunc` picks the token weights of a loss mode (IGD, Pos, plain CE or CFT), computes
the loss from full logits or from per-token log-probs, and feeds the metrics of
:mod:`igdbeam.training.loss_metrics`. :func:`make_compute_loss_func` builds one for a stock
``transformers.Trainer``: it honours ``num_items_in_batch`` (the step's completion-token count),
so gradients do not grow with gradient accumulation (when ``compute_loss_func`` is set, the
Trainer does not divide by the accumulation steps). Under data parallelism it gives the loss of
the whole global batch when ``average_tokens_across_devices=True`` (the default of recent
transformers: the Trainer gathers the token count and multiplies the loss by the process count).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from igdbeam.native.checks import check_unit_interval
from igdbeam.ops.label_weights import (
    OFF_TRIE_POLICIES,
    TokenWeights,
    check_labels,
    label_token_weights,
    positional_token_weights,
)
from igdbeam.training.loss import (
    cft_loss,
    igd_loss,
    igd_loss_from_log_probs,
    pos_loss,
    shift_labels,
    token_cross_entropy,
    weighted_token_mean,
)
from igdbeam.training.loss_metrics import IGSplitLossStats, LeftTrieRowCounter

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie

__all__ = ["LOSS_KINDS", "IGDLossFunc", "make_compute_loss_func"]

LOSS_KINDS = ("igd", "pos", "ce", "cft")


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
        alpha: weight of the counterfactual term (``"cft"`` only).
        ignore_index: label value of non-completion positions.
        off_trie: policy for completions that leave the trie (see ``label_token_weights``).
        validate: check that labels lie in the vocabulary ``"always"``, only on the ``"first"``
            call (default: the check costs a host sync per call on GPU, and CUDA's
            cross-entropy asserts on bad labels anyway) or ``"never"``.

    Training with ``"igd"`` also counts, on the device and without synchronising, the rows whose
    completion left the trie; :meth:`pop_left_trie_rows` reads and resets the count (the trainers
    log it as ``igd_left_trie_rows``).
    """

    def __init__(
        self,
        trie: ItemTrie | None,
        beta: float = 0.1,
        *,
        loss: str = "igd",
        alpha: float = 1.0,
        ignore_index: int = -100,
        off_trie: str = "uniform",
        validate: str = "first",
    ) -> None:
        """Validate the options; see the class docstring."""
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
        self.alpha = float(alpha)
        self.ignore_index = int(ignore_index)
        self.off_trie = off_trie
        self.pending_cf_outputs: Any = None
        self._ig_split = IGSplitLossStats()

    # ------------------------------------------------------------------ helpers
    def trie_on(self, device: torch.device) -> ItemTrie:
        """Return the trie on ``device`` (moved once, then cached)."""
        assert self.trie is not None
        if self.trie.device != device:
            self.trie = self.trie.to(device)
        return self.trie

    def token_weights(self, labels: torch.Tensor) -> torch.Tensor:
        """Weights ``[B, L - 1]`` of the predicted tokens ``labels[:, 1:]`` (unshifted labels).

        IGD walks the unshifted labels, so a completion starting at position 0 is walked from
        its first token; ``"pos"`` runs from 1 on the first predicted completion token; ``"ce"``
        and ``"cft"`` weigh every completion token 1.
        """
        target = labels[:, 1:]
        if self.kind == "igd":
            return label_token_weights(
                labels,
                self.trie_on(labels.device),
                self.beta,
                ignore_index=self.ignore_index,
                off_trie=self.off_trie,
                validate=False,
            ).weight[:, 1:]
        if self.kind == "pos":
            return positional_token_weights(target, self.beta, ignore_index=self.ignore_index)
        return (target != self.ignore_index).to(torch.float32)

    def step_denominator(self, labels: list[torch.Tensor]) -> torch.Tensor:
        """Sum of this loss's token weights over the micro-batches (unshifted labels) of a step."""
        return sum(self.token_weights(t).sum() for t in labels)  # type: ignore[return-value]

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
    ) -> torch.Tensor:
        """Compute the loss from the model outputs (``outputs.logits``) and unshifted labels."""
        if labels is None:
            raise ValueError("the IGD loss needs labels; the batch has none")
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs.logits
        labels = labels.to(logits.device)
        target = shift_labels(labels, self.ignore_index)
        common: dict[str, Any] = {
            "ignore_index": self.ignore_index,
            "num_items_in_batch": num_items_in_batch,
            "validate": self._check_now(),
        }
        if self.kind == "cft":
            cf = self.pending_cf_outputs
            self.pending_cf_outputs = None
            if cf is None:
                raise ValueError(
                    "loss='cft' needs the history-free prompt: use IGDTrainer with "
                    "igdbeam.CFTCollator (batch keys cf_input_ids, cf_attention_mask, cf_labels)"
                )
            cf_logits, cf_labels = cf
            loss = cft_loss(
                logits, labels, cf_logits, cf_labels.to(logits.device), self.alpha, **common
            )
            if self._ig_split.active:
                self._collect(
                    token_cross_entropy(logits, target, ignore_index=self.ignore_index), labels
                )
            return loss
        if self.kind == "igd":
            loss, out = igd_loss(
                logits,
                labels,
                self.trie_on(logits.device),
                self.beta,
                off_trie=self.off_trie,
                return_output=True,
                **common,
            )
            self._count_left(out.token_weights)
        elif self.kind == "pos":
            loss, out = pos_loss(logits, labels, self.beta, return_output=True, **common)
        else:
            if common["validate"]:
                check_labels(labels, logits.shape[-1], self.ignore_index)
            ce = token_cross_entropy(logits, target, ignore_index=self.ignore_index)
            loss, _ = weighted_token_mean(
                ce, (target != self.ignore_index).float(), num_items_in_batch
            )
            self._collect(ce, labels)
            return loss
        self._collect(out.token_loss, labels)
        return loss

    def loss_from_log_probs(
        self,
        log_probs: torch.Tensor,
        labels: torch.Tensor,
        num_items_in_batch: int | float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss from per-token log-probs ``[B, L - 1]`` of unshifted labels ``[B, L]``.

        ``log_probs[:, t]`` is the log-probability of ``labels[:, t + 1]`` (TRL's fused LM head).
        """
        labels = labels.to(log_probs.device)
        if self.kind == "igd":
            loss, out = igd_loss_from_log_probs(
                log_probs,
                labels,
                self.trie_on(log_probs.device),
                self.beta,
                ignore_index=self.ignore_index,
                num_items_in_batch=num_items_in_batch,
                off_trie=self.off_trie,
                validate=self._check_now(),
                return_output=True,
            )
            self._count_left(out.token_weights)
            self._collect(out.token_loss, labels)
            return loss
        if self.kind == "cft":
            raise ValueError("loss='cft' needs full logits; use IGDTrainer")
        nll = torch.where(labels[:, 1:] != self.ignore_index, -log_probs.float(), 0.0)
        loss, _ = weighted_token_mean(nll, self.token_weights(labels), num_items_in_batch)
        self._collect(nll, labels)
        return loss


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
