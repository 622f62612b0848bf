"""Strict checks of the decoding API's scalar arguments, run once where they enter it.

:func:`igdbeam.generate`, :func:`igdbeam.generate_many`, :class:`igdbeam.Decoding` and
:class:`igdbeam.IGDLogitsProcessor` check their scalar arguments here, before any work; the
code below them trusts the checked values. Nothing is converted silently: an integer argument
must be an integer (``2.7``, ``2.0``, ``True`` and NaN are refused, never truncated), a real
argument a real number (not a bool or a string) and finite where infinity has no meaning, and a
flag a bool. Every error names the argument and the value it got.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

from igdbeam.errors import InvalidIdError, as_index

__all__ = ["check_flag", "check_id", "check_int", "check_real"]


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int, or raise ValueError naming ``name``.

    Accepts Python and numpy integers; refuses bools, floats (even integral ones such as
    ``2.0``), NaN, strings and everything else, and values below ``minimum``.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {_describe(value)}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v}")
    return v


def check_id(name: str, value: Any) -> int:
    """Return a token id / column index ``value`` (an integer >= 0) as a Python int.

    Raises:
        InvalidIdError: (a ValueError) not an integer (a float, bool, NaN or string is never
            truncated) or negative.
    """
    v = as_index(value, name)
    if v < 0:
        raise InvalidIdError(f"{name} must be >= 0, got {v}")
    return v


def check_real(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    finite: bool = True,
) -> float:
    """Return ``value`` as a Python float, or raise ValueError naming ``name``.

    Accepts real numbers (Python / numpy ints and floats, 0-d real tensors); refuses bools,
    strings, complex numbers, NaN, infinities when ``finite`` and values outside
    ``[low, high]`` (``(low, high]`` when ``low_open``).
    """
    raw = value
    if isinstance(value, torch.Tensor) and value.dim() == 0 and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {_describe(raw)}")
    v = float(value)
    if math.isnan(v) or (finite and math.isinf(v)):
        raise ValueError(f"{name} must be a finite number, got {raw!r}")
    below = low is not None and (v <= low if low_open else v < low)
    if below or (high is not None and v > high):
        if low is not None and high is not None:
            bounds = f"lie in {'(' if low_open else '['}{low:g}, {high:g}]"
        elif low is not None:
            bounds = f"be {'>' if low_open else '>='} {low:g}"
        else:
            bounds = f"be <= {high:g}"
        raise ValueError(f"{name} must {bounds}, got {raw!r}")
    return v


def check_flag(name: str, value: Any) -> bool:
    """Return ``value`` as a bool; only ``True`` / ``False`` (Python or numpy) are accepted, so a
    string such as ``"false"`` or a number is refused instead of read as true."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {_describe(value)}")
    return bool(value)
