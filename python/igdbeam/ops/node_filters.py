"""Per-request item filters and collaborative (CF) item scores for trie-constrained decoding.

Two per-prompt inputs steer :func:`igdbeam.generate`, :func:`igdbeam.generate_many` and
:class:`igdbeam.IGDLogitsProcessor` beyond the model's own scores:

* ``item_mask`` (bool ``[P, num_items]``, True = may be recommended), e.g. from
  :func:`exclude_items` for a user's history. A beam never enters a trie branch that holds no
  allowed item: a child is allowed when at least one item below it is, and a disallowed child is
  treated exactly like a token that is not a child at all (never a candidate, ``-inf`` in the
  processor, left out of the ``renormalize`` normaliser). A prompt with nothing allowed returns
  ``item_ids = -1``. The IG~ weights stay the trie's (computed over the whole catalog, as
  training saw them): a filter changes which children exist, not how informative they are.
* ``item_scores`` (float ``[P, num_items]``, log-scores such as a sequential recommender's
  log-probabilities or ``log(popularity)``) with ``item_score_weight`` ``lambda``. Every trie node
  ``n`` gets the CF log-mass ``S(n) = logsumexp`` of the (allowed) item scores below it, and the
  step score of child ``c`` of node ``n`` gains ``lambda * (S(c) - S(n))``: the CF model's
  log-probability of the next token given the prefix, as D3's CF-enhanced processor adds it.
  Along a complete path the terms telescope to ``lambda * (S(leaf) - S(root))``, i.e.
  ``lambda * log p_cf(item | allowed items)`` (``S(leaf)`` is the item's score when one item
  owns the path), so beam scores of finished items are the IG-weighted LM score plus ``lambda``
  times the item's CF log-probability; with a length penalty the term is divided by the length
  like the rest of the score. A child whose ``S`` is ``-inf`` (all its items scored ``-inf``)
  gets ``-inf``.

Both are turned natively into per-node arrays ``[P, num_nodes]`` (C++ or CUDA: one pass over the
leaves, then one reverse breadth-first pass in which each inner node reduces its children, whose
ids all exceed its own), so no Python code loops over items or nodes. The mask is
bit-packed (1 bit per node and prompt, 64 prompts per pass on the CPU); scores take 4 bytes per
node and prompt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from igdbeam.errors import InvalidIdError, as_id_array
from igdbeam.native.torch_ops import BUILD_NODE_FILTERS, trie_operands

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie

__all__ = ["NodeFilters", "exclude_items", "node_filters"]

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

# The filter operands of a registered decode op (node_mask, node_score, score_weight,
# filter_rows, filter_count) and those of an unfiltered step: no mask, no scores, no rows.
FilterOperands = tuple[torch.Tensor | None, torch.Tensor | None, float, torch.Tensor | None, int]
NO_FILTER: FilterOperands = (None, None, 0.0, None, 0)


@dataclass(frozen=True)
class NodeFilters:
    """Per-prompt node arrays of item filters and CF scores, as the decode steps read them.

    Attributes:
        mask_words: int64 ``[ceil(P / 64), num_nodes]``, bit-packed and node-major: bit
            ``p % 64`` of ``mask_words[p // 64, n]`` is 1 when at least one allowed item of
            prompt ``p`` lies below node ``n`` (one bit per node and prompt; 64 prompts share a
            pass over the trie). None when every item is allowed. :attr:`node_mask` unpacks it.
        node_scores: float32 ``[P, num_nodes]``, the log-sum-exp of the allowed items' scores
            below each node (``-inf`` when none); None without item scores.
        score_weight: ``lambda``, the weight of the CF term (see the module docstring).
        num_rows: ``P``, the number of prompts (1: the same filter for every prompt).
    """

    mask_words: torch.Tensor | None
    node_scores: torch.Tensor | None
    score_weight: float = 1.0
    num_rows: int = 1

    @property
    def node_mask(self) -> torch.Tensor | None:
        """bool ``[P, num_nodes]``: :attr:`mask_words` unpacked (a copy, 1 byte per node and
        prompt, for inspection); None without a mask."""
        words = self.mask_words
        if words is None:
            return None
        p = torch.arange(self.num_rows, device=words.device)
        return ((words[p // 64] >> (p % 64).unsqueeze(1)) & 1).bool()

    @property
    def device(self) -> torch.device | None:
        """Device of the arrays (None when there are none)."""
        t = self.mask_words if self.mask_words is not None else self.node_scores
        return None if t is None else t.device

    def to(self, device: str | torch.device) -> NodeFilters:
        """Return the filters with their arrays on ``device``."""
        words, scores = (
            None if t is None else t.to(device) for t in (self.mask_words, self.node_scores)
        )
        return NodeFilters(words, scores, self.score_weight, self.num_rows)

    def op_operands(
        self, decoded_rows: int, rows: torch.Tensor | None, device: torch.device
    ) -> FilterOperands:
        """The filter operands of the registered decode ops for ``decoded_rows`` rows.

        ``rows`` maps each decoded row to its prompt (int, ``[decoded_rows]``); None means the
        identity when there is one prompt per decoded row, or prompt 0 for every row when the
        filters have a single row. Returns ``(node_mask, node_score, score_weight, filter_rows,
        filter_count)``; the op's kernel checks that the rows lie in ``[0, filter_count)``.

        Raises:
            ValueError: the arrays are on another device, or ``rows`` does not fit.
        """
        if self.device != device:
            raise ValueError(
                f"the item filters are on {self.device} but the scores are on {device}; "
                "build them on the trie's device"
            )
        P = self.num_rows
        if rows is None:
            if P == 1 and decoded_rows != 1:
                rows = torch.zeros(decoded_rows, dtype=torch.int32, device=device)
            elif decoded_rows != P:
                raise ValueError(
                    f"the item filters have {P} rows but {decoded_rows} rows are decoded; give "
                    "one row per prompt (or one row for all)"
                )
        else:
            if rows.dim() != 1 or rows.shape[0] != decoded_rows:
                raise ValueError(f"filter rows must have shape [{decoded_rows}]")
            rows = rows.to(device=device, dtype=torch.int32).contiguous()
        weight = float(self.score_weight) if self.node_scores is not None else 0.0
        return self.mask_words, self.node_scores, weight, rows, P


# ------------------------------------------------------------------------------------ inputs
def _as_tensor(name: str, x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be an array or tensor, got {type(x).__name__}") from exc


def _as_rows(name: str, t: torch.Tensor, num_items: int) -> torch.Tensor:
    """``[num_items]`` or ``[P, num_items]`` as a 2-D ``[P, num_items]`` tensor."""
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[1] != num_items or t.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape [num_prompts, num_items={num_items}] (or [num_items]), "
            f"got {tuple(t.shape)}"
        )
    return t


def _check_item_mask(item_mask: Any, num_items: int, device: torch.device) -> torch.Tensor:
    t = _as_tensor("item_mask", item_mask)
    if t.dtype != torch.bool:
        if t.is_floating_point() or t.is_complex():
            raise ValueError(
                f"item_mask must be a bool (or integer 0/1) tensor, got dtype {t.dtype}"
            )
        t = t != 0
    t = _as_rows("item_mask", t, num_items)
    return t.to(device).contiguous()


def _check_item_scores(item_scores: Any, num_items: int, device: torch.device) -> torch.Tensor:
    t = _as_tensor("item_scores", item_scores)
    if t.dtype not in _FLOAT_DTYPES:
        if t.dtype == torch.bool or t.is_complex():
            raise ValueError(f"item_scores must be real log-scores, got dtype {t.dtype}")
        t = t.to(torch.float64)
    t = _as_rows("item_scores", t, num_items)
    bad = torch.isnan(t) | torch.isposinf(t)  # one device sync on CUDA
    if bool(bad.any()):
        row, item = (int(v) for v in torch.nonzero(bad)[0].tolist())
        raise ValueError(
            f"item_scores[{row}, {item}] is {float(t[row, item])}; scores must be finite "
            "log-scores (-inf excludes an item)"
        )
    return t.to(device=device, dtype=torch.float32).contiguous()


def _check_weight(weight: Any) -> float:
    try:
        w = float(weight)
    except (TypeError, ValueError):
        raise ValueError(f"item_score_weight must be a number, got {weight!r}") from None
    if not math.isfinite(w):
        raise ValueError(f"item_score_weight must be finite, got {weight!r}")
    return w


# ----------------------------------------------------------------------------------- the op
def node_filters(
    trie: ItemTrie,
    item_mask: Any = None,
    item_scores: Any = None,
    *,
    item_score_weight: float = 1.0,
    num_rows: int | None = None,
) -> NodeFilters | None:
    """Turn per-prompt item inputs into per-node arrays with one native call (C++ or CUDA).

    Args:
        trie: the catalog; the arrays are built on its device.
        item_mask: bool ``[P, num_items]`` (or ``[num_items]`` for every prompt), True = the
            item may be recommended; integer 0/1 is accepted. None: every item is allowed.
        item_scores: float ``[P, num_items]`` (or ``[num_items]``) log-scores; ``-inf`` removes
            an item from the CF mass (and, with a positive weight, from the results); NaN and
            ``+inf`` are refused. None: no CF term.
        item_score_weight: ``lambda``; 0 skips the CF term.
        num_rows: the number of prompts the filters are for: each input must then have 1 or
            ``num_rows`` rows.

    Returns:
        A :class:`NodeFilters`, or None when neither input is given (decoding is unfiltered).

    Raises:
        ValueError: bad shapes or dtypes, NaN / +inf scores, a non-finite weight, or row counts
            that do not match ``num_rows`` (or each other).
    """
    weight = _check_weight(item_score_weight)
    if item_scores is not None and weight == 0.0:
        item_scores = None
    if item_mask is None and item_scores is None:
        return None
    device, num_items = trie.device, trie.num_items
    mask = None if item_mask is None else _check_item_mask(item_mask, num_items, device)
    scores = None if item_scores is None else _check_item_scores(item_scores, num_items, device)
    counts = {int(t.shape[0]) for t in (mask, scores) if t is not None}
    # One row of node arrays serves every prompt when every input has a single row.
    target = max(counts) if num_rows is None else int(num_rows)
    for name, t in (("item_mask", mask), ("item_scores", scores)):
        if t is not None and t.shape[0] not in (1, target):
            raise ValueError(
                f"{name} has {t.shape[0]} rows; give one row per prompt ({target}) or a single "
                "row for all prompts"
            )
    P = 1 if counts == {1} else target
    arrays = trie.arrays()
    out_mask, out_scores = BUILD_NODE_FILTERS(
        trie_operands(trie),
        trie.max_fanout,
        arrays["leaf_nodes"],
        arrays["leaf_item_offsets"],
        arrays["leaf_items"],
        num_items,
        P,
        mask,
        scores,
        trie.max_depth,
    )
    return NodeFilters(
        out_mask if mask is not None else None,
        out_scores if scores is not None else None,
        weight,
        P,
    )


def exclude_items(
    trie: ItemTrie | int,
    excluded: Sequence[Sequence[int]],
    *,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """An ``item_mask`` that allows every item except each row's ``excluded`` item ids.

    Args:
        trie: the catalog (or its number of items).
        excluded: one list of item ids per prompt (e.g. each user's history); ids may repeat.
        device: where the mask goes (default: the trie's device, or the CPU for a count).

    Returns:
        bool ``[len(excluded), num_items]``, False at the excluded items.

    Raises:
        InvalidIdError: an id that is not an integer or lies outside ``[0, num_items)``.
    """
    num_items = int(trie) if isinstance(trie, int) else trie.num_items
    if device is None:
        device = "cpu" if isinstance(trie, int) else trie.device
    rows = [
        as_id_array(list(r) if not isinstance(r, np.ndarray | torch.Tensor) else r, "ids")
        for r in excluded
    ]
    lengths = np.fromiter((r.size for r in rows), dtype=np.int64, count=len(rows))
    flat = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= num_items):
        k = int(np.nonzero((flat < 0) | (flat >= num_items))[0][0])
        row = int(np.searchsorted(np.cumsum(lengths), k, side="right"))
        raise InvalidIdError(
            f"excluded item id {int(flat[k])} (row {row}) is outside the catalog [0, {num_items})"
        )
    mask = torch.ones(len(rows), num_items, dtype=torch.bool)
    if flat.size:
        row_ids = torch.from_numpy(np.repeat(np.arange(len(rows)), lengths))
        mask[row_ids, torch.from_numpy(flat)] = False
    return mask.to(device)


def filter_operands(
    filters: NodeFilters | None,
    decoded_rows: int,
    filter_rows: torch.Tensor | None,
    device: torch.device,
) -> FilterOperands:
    """The ``(node_mask, node_score, score_weight, filter_rows, filter_count)`` operands of a
    registered decode op: :data:`NO_FILTER` without filters, else
    :meth:`NodeFilters.op_operands`."""
    if filters is None:
        return NO_FILTER
    return filters.op_operands(decoded_rows, filter_rows, device)
