"""Item popularity weights: how often each item is a training target (the paper's ``w_i``)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from igdbeam.errors import InvalidIdError, as_id_array, as_index
from igdbeam.native.checks import check_non_negative


def popularity_weights(
    target_item_ids: Iterable[int] | np.ndarray | torch.Tensor,
    num_items: int,
    *,
    smoothing: float = 0.0,
) -> np.ndarray:
    """Count how often each item is a training target (the paper's popularity ``w_i``).

    Args:
        target_item_ids: the target item id of every training sample.
        num_items: catalog size; ids must lie in ``[0, num_items)``.
        smoothing: added to every count, so items never seen as a target keep a weight.

    Returns:
        float64 array of length ``num_items``.

    Raises:
        InvalidIdError: an id that is not an integer (a float such as ``1.5``, a bool, NaN; never
            truncated) or lies outside ``[0, num_items)``; ``num_items`` not a positive integer.
        ValueError: ``smoothing`` negative or not finite.
    """
    if not isinstance(target_item_ids, torch.Tensor | np.ndarray):
        target_item_ids = list(target_item_ids)
    ids = as_id_array(target_item_ids, "target_item_ids").reshape(-1)
    num_items = as_index(num_items, "num_items")
    if num_items <= 0:
        raise InvalidIdError(f"num_items must be positive, got {num_items}")
    if ids.size and (ids.min() < 0 or ids.max() >= num_items):
        pos = int(np.argmax((ids < 0) | (ids >= num_items)))
        raise InvalidIdError(
            f"target item id {int(ids[pos])} (entry {pos}) is out of range [0, {num_items})"
        )
    smoothing = check_non_negative("smoothing", smoothing)
    return np.bincount(ids, minlength=num_items).astype(np.float64) + smoothing
