"""Build a trie's arrays from item token paths (lists or CSR) and item weights.

The checks here turn user input into exact int64 / float64 arrays and name the item and position
of the first bad token; the native builder (``_C.build_trie``) then checks the rest (offsets,
prefix paths, weight signs and finiteness) and computes the layout of
:mod:`igdbeam.trie.layout`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from igdbeam.errors import (
    InvalidIdError,
    VocabularyError,
    as_id_array,
    as_index,
    first_non_integer,
)
from igdbeam.native.library import _C
from igdbeam.trie.layout import ALL_ARRAYS, ENTROPY_MODES, TrieData, TrieMeta

_INT32_MAX = 2**31 - 1

Weights = Sequence[float] | np.ndarray | torch.Tensor
"""Item weights ``w_i >= 0``, one per item."""


def build_from_csr(
    offsets: np.ndarray | torch.Tensor,
    tokens: np.ndarray | torch.Tensor,
    weights: Weights | None = None,
    *,
    entropy: str = "global",
    vocab_size: int | None = None,
    equal_ig_rtol: float = 1e-9,
) -> TrieData:
    """Build the arrays of the paths ``tokens[offsets[i]:offsets[i + 1]]`` (item ``i``).

    Arguments as :meth:`igdbeam.ItemTrie.from_csr` / :meth:`igdbeam.ItemTrie.from_token_ids`.

    Raises:
        InvalidIdError: a float / bool / non-numeric offset or token, or a negative token id.
        VocabularyError: a token id ``>= vocab_size``.
        ValueError: a bad entropy mode, vocabulary size, ``equal_ig_rtol`` (not a finite number
            >= 0) or weights; malformed offsets, an empty path or a path that is a prefix of
            another (from the native builder).
    """
    offsets = _as_int64(offsets, "offsets")
    tokens = _as_int64(tokens, "tokens")
    if entropy not in ENTROPY_MODES:
        raise ValueError(f"entropy must be one of {sorted(ENTROPY_MODES)}, got {entropy!r}")
    if vocab_size is not None:
        vocab_size = as_index(vocab_size, "vocab_size")
        if vocab_size <= 0:
            raise ValueError(f"vocab_size must be a positive integer, got {vocab_size}")
    num_items = offsets.shape[0] - 1
    w = None if weights is None else _overflow_safe(_as_weights(weights, num_items))
    _check_token_ranges(offsets, tokens, vocab_size)
    raw = _C.build_trie(
        offsets,
        tokens,
        w,
        ENTROPY_MODES[entropy],
        -1 if vocab_size is None else vocab_size,
        _check_rtol(equal_ig_rtol),
    )
    meta = TrieMeta(
        entropy=entropy,
        vocab_size=-1 if vocab_size is None else int(vocab_size),
        max_depth=int(raw["max_depth"]),
        max_fanout=int(raw["max_fanout"]),
        num_items=int(num_items),
    )
    return TrieData({name: torch.from_numpy(raw[name]) for name in ALL_ARRAYS}, meta)


def build_from_paths(
    sequences: Iterable[Sequence[int]],
    weights: Weights | None = None,
    *,
    entropy: str = "global",
    vocab_size: int | None = None,
    equal_ig_rtol: float = 1e-9,
) -> TrieData:
    """Build the arrays of one token-id path per item; see :meth:`igdbeam.ItemTrie.from_token_ids`.

    Raises:
        TypeError: ``sequences`` is one tensor/array, or an item is a string or not a sequence.
        InvalidIdError, VocabularyError, ValueError: as :func:`build_from_csr`.
    """
    offsets, tokens = _paths_to_csr(sequences)
    return build_from_csr(
        offsets,
        tokens,
        weights,
        entropy=entropy,
        vocab_size=vocab_size,
        equal_ig_rtol=equal_ig_rtol,
    )


def _as_int64(values: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """Return a 1-D contiguous int64 numpy array, or raise naming ``name``.

    Raises:
        InvalidIdError: a float / bool / non-numeric dtype or element (never truncated).
        ValueError: not 1-D.
    """
    arr = as_id_array(values, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(arr.shape)}")
    return arr


def _as_weights(weights: Weights, num_items: int) -> np.ndarray:
    """Return item weights as float64 ``[num_items]``; bools, strings and objects are refused.

    Finiteness and signs are checked by the native build, which names the item.
    """
    if isinstance(weights, torch.Tensor):
        if weights.dtype == torch.bool or weights.is_complex():
            raise ValueError(f"weights must be real numbers, got dtype {weights.dtype}")
        w = weights.detach().cpu().numpy()
    elif isinstance(weights, np.ndarray) and weights.dtype != object:
        w = weights
    else:
        if isinstance(weights, str | bytes):
            raise ValueError("weights must be a sequence of numbers, got a string")
        values = list(weights.reshape(-1) if isinstance(weights, np.ndarray) else weights)
        for i, v in enumerate(values):
            if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.number):
                raise ValueError(
                    f"item {i} has weight {v!r} ({type(v).__name__}); weights must be finite "
                    "numbers >= 0"
                )
        w = np.asarray(values, dtype=np.float64)
    if w.dtype.kind not in "iuf":
        raise ValueError(f"weights must be real numbers, got dtype {w.dtype}")
    w = np.ascontiguousarray(w, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != num_items:
        raise ValueError(
            f"weights must have one value per item ({num_items}), got shape {tuple(w.shape)}"
        )
    return w


def _check_rtol(value: object) -> float:
    """``equal_ig_rtol`` as a finite float >= 0 (a bool, string, NaN or inf is refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"equal_ig_rtol must be a number >= 0, got {value!r}")
    rtol = float(value)
    if not math.isfinite(rtol) or rtol < 0:
        raise ValueError(f"equal_ig_rtol must be a finite number >= 0, got {value!r}")
    return rtol


_RESCALE_ABOVE = 2.0**1000
"""Weights whose sum exceeds this are scaled down by a power of two before the build."""


def _overflow_safe(w: np.ndarray) -> np.ndarray:
    """The weights scaled by an exact power of two when their sum could overflow float64.

    ``p_r(i) = w_i / sum_j w_j`` does not depend on the scale, but the native build sums the
    weights (the catalog's total and each duplicate title's leaf), and near ``1e308`` that sum
    is ``inf``, which made every entropy and IG 0 and gave ``leaf_weight`` entries that no file
    can hold. Multiplying by ``2**-e`` (``e`` the exponent of the largest weight) is exact, keeps
    every ratio and brings the sum below the number of items. A positive weight too small to
    survive the scaling (below ``2**-1074`` relative to the largest: its probability rounds to
    0 in float64 anyway) becomes the smallest positive float, so it stays positive and the
    zero-IG edges (decided from which weights are exactly 0) do not change. Weights that are
    negative or not finite are returned as they are, for the native build to name the item.
    """
    if w.size == 0 or not bool(np.isfinite(w).all()) or bool((w < 0).any()):
        return w
    with np.errstate(over="ignore"):
        total = float(np.sum(w))
    if total <= _RESCALE_ABOVE:
        return w
    _, exponent = math.frexp(float(w.max()))
    scaled = np.ldexp(w, -exponent)
    scaled[(w > 0) & (scaled == 0)] = np.nextafter(0.0, 1.0)
    return scaled


def _item_of_token(offsets: np.ndarray, k: int) -> tuple[int, int]:
    """``(item, position)`` of flat token index ``k`` (offsets valid, ascending)."""
    item = int(np.searchsorted(offsets, k, side="right")) - 1
    return item, int(k - offsets[item])


def _check_token_ranges(offsets: np.ndarray, tokens: np.ndarray, vocab_size: int | None) -> None:
    """Raise a typed error naming the item and position of the first token id out of range.

    Runs only when the offsets are well formed; the native build reports malformed offsets.
    """
    if (
        offsets.shape[0] < 2
        or offsets[0] != 0
        or offsets[-1] != tokens.shape[0]
        or bool((offsets[1:] < offsets[:-1]).any())
        or tokens.shape[0] == 0
    ):
        return
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0:
        item, pos = _item_of_token(offsets, int(np.argmax(tokens < 0)))
        raise InvalidIdError(
            f"item {item} has a negative token id {int(tokens[offsets[item] + pos])} at "
            f"position {pos}; token ids must be >= 0"
        )
    if vocab_size is not None and hi >= vocab_size:
        item, pos = _item_of_token(offsets, int(np.argmax(tokens >= vocab_size)))
        raise VocabularyError(
            f"item {item} has token id {int(tokens[offsets[item] + pos])} at position {pos}, "
            f"outside the vocabulary [0, {vocab_size})"
        )
    if hi > _INT32_MAX:
        item, pos = _item_of_token(offsets, int(np.argmax(tokens > _INT32_MAX)))
        raise InvalidIdError(
            f"item {item} has token id {int(tokens[offsets[item] + pos])} at position {pos} "
            "that does not fit in 32 bits"
        )


def _paths_to_csr(sequences: Iterable[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Flatten token sequences into (offsets, tokens) int64 arrays.

    Raises:
        TypeError: ``sequences`` is one tensor/array, or an item is a string or not a sequence.
        InvalidIdError: a token that is not an integer (float, bool, NaN, ...), naming the item
            and the position; nothing is truncated.
    """
    if isinstance(sequences, torch.Tensor | np.ndarray):
        raise TypeError(
            "sequences must be a list of token-id lists (one per item, terminator included), "
            "not a single tensor/array; use ItemTrie.from_csr for flat arrays"
        )
    rows: list[Sequence[int]] = []
    for index, seq in enumerate(sequences):
        if isinstance(seq, str | bytes):
            raise TypeError(
                f"item {index} is a string; ItemTrie.from_token_ids takes token ids, "
                "use ItemTrie.from_titles for text"
            )
        if isinstance(seq, torch.Tensor | np.ndarray):
            if seq.ndim != 1:
                raise TypeError(f"item {index} must be a 1-D token path, got shape {seq.shape}")
            if not isinstance(seq, np.ndarray) or seq.dtype != object:
                # Keeps the dtype visible: a float tensor becomes floats, rejected below.
                seq = seq.tolist()
            else:
                seq = list(seq)
        elif not isinstance(seq, Sequence):
            try:
                seq = list(seq)
            except TypeError:
                raise TypeError(
                    f"item {index} must be a sequence of token ids, got {type(seq).__name__}"
                ) from None
        rows.append(seq)
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = list(itertools.chain.from_iterable(rows))
    bad = first_non_integer(flat)
    if bad >= 0:
        item, pos = _item_of_token(offsets, bad)
        raise InvalidIdError(
            f"item {item} has token {flat[bad]!r} ({type(flat[bad]).__name__}) at position {pos}; "
            "token ids must be integers (not floats, bools or NaN)"
        )
    try:
        tokens = np.fromiter(flat, dtype=np.int64, count=len(flat))
    except OverflowError:
        k = next(i for i, t in enumerate(flat) if not -(2**63) <= t < 2**63)
        item, pos = _item_of_token(offsets, k)
        raise InvalidIdError(
            f"item {item} has token id {flat[k]} at position {pos} that does not fit in 64 bits"
        ) from None
    return offsets, tokens
