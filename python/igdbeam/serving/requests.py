"""The recommendation API's request: parsing and validation of ``POST /v1/recommend`` bodies.

Every check names the field it rejects (:class:`RequestError`), so a client learns what to fix
from a 400 answer; nothing here touches a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_HISTORY = 1_000
MAX_ITEM_MASK = 1_000_000


class RequestError(ValueError):
    """A bad request: ``field`` names the JSON field (``history[2]``, ``k``, ``body``)."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        """Store the field, the message and the HTTP status (400 unless told)."""
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


@dataclass(frozen=True)
class RecommendRequest:
    """A validated request, in catalog positions (trie item ids).

    Attributes:
        history: catalog positions of the history items, oldest first.
        k: number of items to return.
        alpha: IGD strength in [0, 1].
        exclude_history: leave the history items out of the answer.
        allowed: catalog positions that may be recommended (None: every item).
    """

    history: tuple[int, ...]
    k: int
    alpha: float
    exclude_history: bool
    allowed: tuple[int, ...] | None

    def batch_key(self, num_beams: int) -> tuple[int, float]:
        """Requests with equal keys can be decoded in one batch: ``(beams, alpha)``."""
        return (max(num_beams, self.k), self.alpha)

    def excluded_or_restricted(self) -> bool:
        """True when the request filters the catalog."""
        return self.exclude_history or self.allowed is not None


def _int_id(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def parse_request(
    body: Any,
    *,
    resolve_item: Any,
    max_k: int,
    default_k: int = 10,
    default_alpha: float = 0.0,
) -> RecommendRequest:
    """Validate a decoded JSON body.

    Args:
        body: the decoded JSON value (must be an object).
        resolve_item: ``f(value, field) -> catalog position`` for an id or a title; raises
            :class:`RequestError` naming ``field`` for an unknown one.
        max_k: the largest ``k`` the server accepts.
        default_k, default_alpha: used when the body omits them.

    Raises:
        RequestError: naming the first bad field.
    """
    if not isinstance(body, Mapping):
        raise RequestError("body", "must be a JSON object")
    known = {"history", "k", "alpha", "exclude_history", "item_mask"}
    extra = sorted(str(k) for k in body if k not in known)
    if extra:
        raise RequestError(extra[0], f"unknown field; known fields: {', '.join(sorted(known))}")

    history_value = body.get("history")
    if not isinstance(history_value, Sequence) or isinstance(history_value, str | bytes):
        raise RequestError("history", "must be a list of item ids or titles")
    if not history_value:
        raise RequestError("history", "must hold at least one item")
    if len(history_value) > MAX_HISTORY:
        raise RequestError("history", f"holds {len(history_value)} items; at most {MAX_HISTORY}")
    history = tuple(resolve_item(v, f"history[{i}]") for i, v in enumerate(history_value))

    k_value = body.get("k", default_k)
    k = _int_id(k_value)
    if k is None or not 1 <= k <= max_k:
        raise RequestError("k", f"must be an integer in [1, {max_k}], got {k_value!r}")

    alpha_value = body.get("alpha", default_alpha)
    if isinstance(alpha_value, bool) or not isinstance(alpha_value, int | float):
        raise RequestError("alpha", f"must be a number in [0, 1], got {alpha_value!r}")
    alpha = float(alpha_value)
    if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise RequestError("alpha", f"must be a number in [0, 1], got {alpha_value!r}")

    exclude_value = body.get("exclude_history", True)
    if not isinstance(exclude_value, bool):
        raise RequestError("exclude_history", f"must be true or false, got {exclude_value!r}")

    allowed: tuple[int, ...] | None = None
    mask_value = body.get("item_mask")
    if mask_value is not None:
        if not isinstance(mask_value, Sequence) or isinstance(mask_value, str | bytes):
            raise RequestError("item_mask", "must be a list of allowed item ids")
        if len(mask_value) > MAX_ITEM_MASK:
            raise RequestError("item_mask", f"holds more than {MAX_ITEM_MASK} ids")
        allowed = tuple(
            sorted({resolve_item(v, f"item_mask[{i}]") for i, v in enumerate(mask_value)})
        )
    return RecommendRequest(history, k, alpha, exclude_value, allowed)
