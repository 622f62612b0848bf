"""Per-token IGD weights of a label batch (spec section 3): the training half of IGD.

``label_token_weights`` walks the completion of every row (the labels that are not
``ignore_index``, in order) from the trie root with the native op (C++ for CPU tensors, CUDA for
GPU tensors, one call per batch, no host synchronisation per row) and returns each token's
information gain, its zero-IG flag and its weight: ``beta`` for a zero-IG token, 1 for the others
and 0 off the completion. ``positional_token_weights`` builds the "Pos" baseline's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from igdbeam.errors import LeftTrieError, VocabularyError, as_index
from igdbeam.native.checks import check_tensor, check_unit_interval, row_major
from igdbeam.native.dispatch import run_op

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
    reduction over the batch; on a GPU it synchronises once per call.
    """
    if labels.numel() == 0:
        return
    # Fast path: one masked fill and one min/max reduction (a single sync on GPU).
    lo, hi = torch.stack(torch.aminmax(labels.masked_fill(labels == ignore_index, 0))).tolist()
    if lo >= 0 and (vocab_size is None or hi < vocab_size):
        return
    bad = (labels < 0) & (labels != ignore_index)
    if vocab_size is not None:
        bad |= labels >= vocab_size
    if bool(bad.any()):
        pos = torch.nonzero(bad)[0].tolist()
        value = int(labels[tuple(pos)])
        allowed = f"[0, {vocab_size})" if vocab_size is not None else "[0, vocab)"
        raise VocabularyError(
            f"{name}[{pos[0]}, {pos[1]}] = {value} is neither ignore_index ({ignore_index}) nor a "
            f"token id in {allowed}; check the collator's label masking and the tokenizer/model "
            "vocabulary"
        )


def _left_trie_message(
    labels: torch.Tensor, trie: ItemTrie, rows: list[int], ignore_index: int
) -> str:
    """Describe the first offending token of the first rows that left the trie."""
    details = []
    for r in rows[:3]:
        completion = [
            (pos, tok) for pos, tok in enumerate(labels[r].tolist()) if tok != ignore_index
        ]
        tokens = [tok for _, tok in completion]
        node = 0
        off = trie.child_offsets.cpu()
        tok_arr = trie.token.cpu()
        where = "after the end of the completion"
        for k, (pos, tok) in enumerate(completion):
            lo, hi = int(off[node]), int(off[node + 1])
            children = tok_arr[lo:hi]
            hit = (children == tok).nonzero()
            if hit.numel() == 0:
                reason = "after a complete item path" if lo == hi else "not a child of the prefix"
                where = f"position {pos} (completion token {k}): token {tok} is {reason}"
                break
            node = lo + int(hit[0])
        details.append(
            f"row {r}: {where}; completion {tokens[:12]}{' ...' if len(tokens) > 12 else ''}"
        )
    more = f" (and {len(rows) - 3} more)" if len(rows) > 3 else ""
    return (
        f"{len(rows)} row(s) {rows[:20]}{' ...' if len(rows) > 20 else ''} have a completion that "
        f"is not an item path of the trie{more}: " + "; ".join(details) + ". Check that the trie "
        "was built from the same tokenization as the completions (ItemTrie.from_titles with the "
        "prompt's context), or pass off_trie='uniform' / 'ignore'"
    )


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
    beta = check_unit_interval("beta", beta)
    policy = _policy_code(off_trie)
    ignore_index = as_index(ignore_index, "ignore_index")
    if vocab_size is not None:
        vocab_size = as_index(vocab_size, "vocab_size")
    if isinstance(labels, torch.Tensor) and labels.dtype == torch.int32:
        labels = labels.to(torch.int64)
    check_tensor("labels", labels, ndim=2, dtypes=(torch.int64,), device=trie.device)
    if validate:
        check_labels(
            labels, vocab_size if vocab_size is not None else trie.vocab_size, ignore_index
        )
    labels = row_major(labels)
    rows, cols = labels.shape
    device = labels.device
    info_gain = torch.empty(rows, cols, dtype=torch.float32, device=device)
    zero_ig = torch.empty(rows, cols, dtype=torch.uint8, device=device)
    weight = torch.empty(rows, cols, dtype=torch.float32, device=device)
    row_status = torch.empty(rows, dtype=torch.int32, device=device)
    if rows > 0 and cols > 0:
        run_op(
            "label_weights",
            trie.native_view(),
            labels.data_ptr(),
            rows,
            cols,
            labels.stride(0),
            ignore_index,
            beta,
            policy,
            info_gain.data_ptr(),
            zero_ig.data_ptr(),
            weight.data_ptr(),
            row_status.data_ptr(),
            device_of=labels,
        )
    else:
        info_gain.zero_()
        zero_ig.zero_()
        weight.zero_()
        row_status.zero_()
    out = TokenWeights(info_gain, zero_ig.view(torch.bool), weight, row_status)
    if policy == OFF_TRIE_POLICIES["error"] and rows > 0:
        left = out.left_trie_rows
        if left:
            raise LeftTrieError(_left_trie_message(labels.cpu(), trie.cpu(), left, ignore_index))
    return out


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
