"""Training and evaluation metrics of the IGD loss, accumulated on the device without syncing.

* :class:`IGSplitLossStats` sums the token loss and the count of zero-IG and of positive-IG
  completion tokens (the paper's "bias in SFT" analysis); :func:`ig_split_metrics` turns the
  sums into ``<prefix>_loss_zero_ig`` / ``<prefix>_loss_pos_ig`` /
  ``<prefix>_zero_ig_token_share``.
* :class:`LeftTrieRowCounter` counts the rows whose completion left the trie (logged as
  ``igd_left_trie_rows``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from igdbeam.ops.label_weights import TokenWeights, label_token_weights

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie


class IGSplitLossStats:
    """Sums of the token loss of zero-IG and of positive-IG completion tokens, while active.

    The sums stay a detached ``[sum_loss_zero, n_zero, sum_loss_pos, n_pos]`` tensor on the
    loss's device; reading them (:meth:`stop`) is the only host sync.
    """

    def __init__(self) -> None:
        """Start inactive with no sums."""
        self.active = False
        self._sums: torch.Tensor | None = None

    def start(self) -> None:
        """Reset the sums and start accumulating."""
        self._sums = None
        self.active = True

    def stop(self) -> torch.Tensor | None:
        """Stop accumulating; return ``[sum_loss_zero, n_zero, sum_loss_pos, n_pos]`` or None."""
        self.active = False
        sums, self._sums = self._sums, None
        return sums

    def add(
        self, token_loss: torch.Tensor, labels: torch.Tensor, trie: ItemTrie, ignore_index: int
    ) -> None:
        """Add a batch: ``token_loss[:, t]`` is the loss of ``labels[:, t + 1]`` (unshifted).

        Rows whose completion leaves ``trie`` are left out. Does nothing while inactive.
        """
        if not self.active:
            return
        tw = label_token_weights(labels, trie, 1.0, ignore_index=ignore_index, validate=False)
        ok = (labels[:, 1:] != ignore_index) & ~tw.left_trie[:, None]
        zero = ok & tw.zero_ig[:, 1:]
        pos = ok & ~tw.zero_ig[:, 1:]
        tl = token_loss[:, : labels.shape[1] - 1].detach().float()
        sums = torch.stack(
            [(tl * zero).sum(), zero.sum().float(), (tl * pos).sum(), pos.sum().float()]
        )
        self._sums = sums if self._sums is None else self._sums + sums


def ig_split_metrics(sums: torch.Tensor, prefix: str) -> dict[str, float]:
    """Mean zero-IG / positive-IG token loss and the zero-IG token share from summed stats.

    ``sums`` is :meth:`IGSplitLossStats.stop`'s tensor (summed over processes when gathered).
    A mean is left out when it has no tokens.
    """
    loss_zero, n_zero, loss_pos, n_pos = sums.tolist()
    metrics: dict[str, float] = {}
    if n_zero > 0:
        metrics[f"{prefix}_loss_zero_ig"] = loss_zero / n_zero
    if n_pos > 0:
        metrics[f"{prefix}_loss_pos_ig"] = loss_pos / n_pos
    metrics[f"{prefix}_zero_ig_token_share"] = n_zero / max(n_zero + n_pos, 1.0)
    return metrics


class LeftTrieRowCounter:
    """Counts, on the device and without syncing, the rows whose completion left the trie."""

    def __init__(self) -> None:
        """Start with no count (no IGD loss has run)."""
        self._rows: torch.Tensor | None = None

    def add(self, token_weights: TokenWeights | None) -> None:
        """Add the rows of one batch's label weights that left the trie (None: nothing)."""
        if token_weights is None:
            return
        n = token_weights.left_trie.sum()
        self._rows = n if self._rows is None else self._rows + n

    def pop(self) -> int | None:
        """Rows counted since the last call (None: nothing was added); resets the count."""
        n, self._rows = self._rows, None
        return None if n is None else int(n)
