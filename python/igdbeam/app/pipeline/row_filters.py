"""Per-row item filters and collaborative scores of recommending (``--exclude-history``,
``--popularity-prior``, ``--item-scores``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from igdbeam.data.bigrec_csv import Sample


def history_exclusions(
    catalog: Any, samples: Sequence[Sample], dataset: Any = None
) -> list[list[int]]:
    """Catalog positions (trie item ids) of the items each sample's user rated before its target,
    for ``exclude_item_ids`` (``--exclude-history``).

    With ``dataset`` (the loaded splits the samples come from) that is the user's whole prior
    history (:func:`igdbeam.data.user_history.prior_item_ids`: every earlier row's target, not
    only the newest items kept in the row); without it, the row's own history. Ids missing from
    the catalog cannot be recommended anyway and are skipped.
    """
    known = set(catalog.ids)
    if dataset is not None:
        from igdbeam.data.user_history import prior_item_ids

        ids = prior_item_ids(dataset, samples)
    else:
        ids = [list(s.history_item_id) for s in samples]
    return [[catalog.position(i) for i in row if i in known] for row in ids]


def popularity_log_scores(counts: np.ndarray) -> np.ndarray:
    """The popularity prior's item log-scores ``log(count + 1)`` (``--popularity-prior``)."""
    return np.log(np.asarray(counts, dtype=np.float64) + 1.0)


class RowFilters:
    """Per-batch ``item_mask`` / ``item_scores`` keywords of the decoder, sliced from per-row
    inputs (``exclude_item_ids``: one list per sample; ``item_scores``: one row per sample or one
    row for all)."""

    def __init__(
        self,
        trie: Any,
        num_rows: int,
        exclude: Sequence[Sequence[int]] | None,
        scores: Any,
        weight: float,
    ) -> None:
        """Check the per-row inputs against ``num_rows`` (ValueError on a mismatch)."""
        self.trie, self.exclude, self.weight = trie, exclude, float(weight)
        if exclude is not None and len(exclude) != num_rows:
            raise ValueError(f"exclude_item_ids has {len(exclude)} rows for {num_rows} samples")
        self.scores = None
        if scores is not None:
            t = torch.as_tensor(np.asarray(scores, dtype=np.float32))
            if t.dim() not in (1, 2) or (t.dim() == 2 and t.shape[0] != num_rows):
                raise ValueError(
                    f"item_scores must have shape [{num_rows} samples, num_items] or "
                    f"[num_items], got {tuple(t.shape)}"
                )
            self.scores = t

    def kwargs(self, idx: Sequence[int]) -> dict[str, Any]:
        """The decoder keywords for the batch of sample indices ``idx``."""
        from igdbeam.ops.node_filters import exclude_items

        out: dict[str, Any] = {}
        if self.exclude is not None:
            out["item_mask"] = exclude_items(self.trie, [self.exclude[i] for i in idx])
        if self.scores is not None:
            rows = self.scores if self.scores.dim() == 1 else self.scores[list(idx)]
            out["item_scores"] = rows.to(self.trie.device)
            out["item_score_weight"] = self.weight
        return out
