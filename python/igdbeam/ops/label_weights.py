"""Per-token IGD weights of a label batch (spec section 3): the training half of IGD.

``label_token_weights`` walks the completion of every row (the labels that are not
``ignore_index``, in order) from the trie root with the native op (C++ for CPU tensors, CUDA for
GPU tensors, one call per batch, no host synchronisation per row) and returns each token's
information gain, its zero-IG flag and its weight: ``beta`` for a zero-IG token, 1 for the others
and 0 off the completion. The native op is registered as ``torch.ops.igdbeam.label_weights``
(and the label check as ``igdbeam::check_labels``), so ``torch.compile(fullgraph=True)`` traces
both without a graph break. ``positional_token_weights`` builds the "Pos" baseline's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from igdbeam.errors import as_index
from igdbeam.native.checks import check_tensor, check_unit_interval, row_major
from igdbeam.native.torch_ops import CHECK_LABELS, LABEL_WEIGHTS, trie_operands

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie

OFF_TRIE_POLICIES = {"error": 0, "uniform": 1, "ignore": 2}
ROW_LEFT_TRIE = 1

__all__ = [
    "OFF_TRIE_POLICIES",
    "TokenWeights",
    "check_labels",
    "label_token_weights",
    "positional_token_weights",
]


@dataclass(frozen=True)
class TokenWeights:
    """Per-token IGD quantities of a ``[rows, cols]`` label batch (all on the labels' device).

    Attributes:
        info_gain: float32 ``[rows, cols]``, IG of each completion token's trie edge, 0 elsewhere
            (and 0 on rows that left the trie).
        zero_ig: bool ``[rows, cols]``, True for a completion token whose edge has zero IG.
        weight: float32 ``[rows, cols]``, ``beta`` on zero-IG tokens, 1 on the others, 0 off the
            completion; rows that left the trie follow the ``off_trie`` policy.
        row_status: int32 ``[rows]``, 0 when the row's completion is a trie path (prefix), 1 when it
            left the trie.
    """

    info_gain: torch.Tensor
    zero_ig: torch.Tensor
    weight: torch.Tensor
    row_status: torch.Tensor

    @property
    def left_trie(self) -> torch.Tensor:
        """Bool ``[rows]``: True for the rows whose completion left the trie."""
        return self.row_status == ROW_LEFT_TRIE

    @property
    def left_trie_rows(self) -> list[int]:
        """Indices of the rows whose completion left the trie (synchronises with the device)."""
        return torch.nonzero(self.left_trie).flatten().tolist()

    @property
    def num_left_trie(self) -> int:
        """Number of rows whose completion left the trie (synchronises with the device)."""
        return int(self.left_trie.sum())


def _policy_code(off_trie: str) -> int:
    try:
        return OFF_TRIE_POLICIES[off_trie]
    except (KeyError, TypeError):
        raise ValueError(
            f"off_trie must be one of {sorted(OFF_TRIE_POLICIES)}, got {off_trie!r}"
        ) from None


def check_labels(
    labels: torch.Tensor, vocab_size: int | None, ignore_index: int, *, name: str = "labels"
) -> None:
    """Raise VocabularyError unless every label is ``ignore_index`` or lies in ``[0, vocab_size)``.

    With ``vocab_size=None`` only negative labels other than ``ignore_index`` are rejected. One
    reduction over the batch; on a GPU it synchronises once per call. Runs as the registered op
    ``igdbeam::check_labels``, so a compiled graph keeps the check (no graph break).
    """
    CHECK_LABELS(labels, -1 if vocab_size is None else vocab_size, ignore_index, name)


def label_token_weights(
    labels: torch.Tensor,
    trie: ItemTrie,
    beta: float,
    *,
    ignore_index: int = -100,
    off_trie: str = "uniform",
    vocab_size: int | None = None,
    validate: bool = True,
) -> TokenWeights:
    """Compute the IGD token weights of a label batch (spec section 3, Eq. 7).

    Each row's completion (its labels that are not ``ignore_index``, in order) is walked from the
    trie root; position ``t`` of every output describes the token ``labels[t]``. For next-token
    losses, walk the unshifted labels and then shift the outputs left by one
    (:func:`igdbeam.training.loss.shifted_token_weights`), as ``igd_loss`` does, so that a
    completion that starts at position 0 is still walked from its first token.

    Args:
        labels: int64 ``[rows, cols]`` on the trie's device (int32 is accepted and widened).
        trie: the item trie (``trie.to(device)`` for GPU labels).
        beta: weight of zero-IG tokens, in ``[0, 1]``.
        ignore_index: label value of prompt and padding positions.
        off_trie: rows whose completion leaves the trie (a token that is not a child, or tokens
            after a leaf): ``"uniform"`` (every completion token weighs ``beta``, the reference
            behaviour; ``beta`` cancels out in the micro-batch normalisation only when every row
            of the micro-batch leaves the trie, otherwise those rows weigh ``beta`` against the
            others' 1), ``"ignore"`` (weight 0) or ``"error"`` (raise :class:`LeftTrieError`
            naming the rows and the first offending token).
        vocab_size: when given (else the trie's ``vocab_size`` when known), labels must lie in
            ``[0, vocab_size)`` or equal ``ignore_index``.
        validate: check label values (one reduction; a host sync on GPU). The native op is safe
            without it: an unknown token simply leaves the trie.

    Returns:
        TokenWeights with ``info_gain``, ``zero_ig``, ``weight`` and ``row_status``.

    Raises:
        LeftTrieError: (``off_trie="error"``) a completion that leaves the trie (a ValueError).
        VocabularyError: a label outside the vocabulary (a ValueError).
        ValueError: bad beta, policy, shape, dtype or device.
        MissingCudaKernelsError: CUDA labels with a build that has no CUDA kernels.
    """
    return checked_label_token_weights(
        labels,
        trie,
        check_unit_interval("beta", beta),
        ignore_index=ignore_index,
        off_trie=off_trie,
        vocab_size=vocab_size,
        validate=validate,
    )


def checked_label_token_weights(
    labels: torch.Tensor,
    trie: ItemTrie,
    beta: float,
    *,
    ignore_index: int = -100,
    off_trie: str = "uniform",
    vocab_size: int | None = None,
    validate: bool = True,
) -> TokenWeights:
    """:func:`label_token_weights` for a caller that checked ``beta`` (a float in [0, 1]) once at
    its own public entry (``IGDLossFunc`` / ``IGDTrainer``); the labels are still checked."""
    policy = _policy_code(off_trie)
    ignore_index = as_index(ignore_index, "ignore_index")
    if vocab_size is not None:
        vocab_size = as_index(vocab_size, "vocab_size")
    if isinstance(labels, torch.Tensor) and labels.dtype == torch.int32:
        labels = labels.to(torch.int64)
    check_tensor("labels", labels, ndim=2, dtypes=(torch.int64,), device=trie.device)
    labels = row_major(labels)
    if validate:
        check_labels(
            labels, vocab_size if vocab_size is not None else trie.vocab_size, ignore_index
        )
    # One native call (C++ or CUDA by the labels' device); with off_trie="error" the op raises
    # LeftTrieError naming the rows.
    info_gain, zero_ig, weight, row_status = LABEL_WEIGHTS(
        trie_operands(trie), trie.max_fanout, labels, ignore_index, beta, policy
    )
    return TokenWeights(info_gain, zero_ig, weight, row_status)


def positional_token_weights(
    labels: torch.Tensor, beta: float, *, ignore_index: int = -100
) -> torch.Tensor:
    """Weights of the "Pos" baseline: linear from 1 on the first completion token to ``beta``.

    For a row with ``n`` completion tokens (labels != ``ignore_index``), the ``k``-th one
    (``k = 0 .. n-1``) weighs ``1 - (1 - beta) * k / (n - 1)`` (1 when ``n == 1``); other positions
    weigh 0. Pure tensor ops, any device, no synchronisation.

    Args:
        labels: integer ``[rows, cols]`` labels (aligned with the losses they weight).
        beta: weight of the last completion token, in ``[0, 1]``.
        ignore_index: label value of prompt and padding positions.

    Returns:
        float32 ``[rows, cols]`` weights.
    """
    beta = check_unit_interval("beta", beta)
    check_tensor("labels", labels, ndim=2)
    mask = labels != ignore_index
    k = torch.cumsum(mask, dim=1) - 1  # index of each completion token within its row
    n = mask.sum(dim=1, keepdim=True)
    frac = k.to(torch.float32) / (n - 1).clamp(min=1).to(torch.float32)
    return torch.where(mask, 1.0 - (1.0 - beta) * frac, torch.zeros((), device=labels.device))
