"""Per-row item filters and collaborative scores of recommending (``--exclude-history``,
``--popularity-prior``, ``--item-scores``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from igdbeam.data.bigrec_csv import Sample


def history_exclusions(catalog: Any, samples: Sequence[Sample]) -> list[list[int]]:
    """Catalog positions (trie item ids) of each sample's history items, for
    ``exclude_item_ids`` (``--exclude-history``); history ids missing from the catalog cannot be
    recommended anyway and are skipped."""
    known = set(catalog.ids)
    return [[catalog.position(i) for i in s.history_item_id if i in known] for s in samples]


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
