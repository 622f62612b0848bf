"""Argument checks shared by the ops: clear errors before any pointer reaches native code."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

LOGIT_DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def check_unit_interval(name: str, value: float) -> float:
    """Return ``value`` as float, or raise ValueError unless it is a number in [0, 1]."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return v


def check_non_negative(name: str, value: Any) -> float:
    """Return ``value`` as float, or raise ValueError unless it is a finite real number >= 0
    (a bool or a string is refused, never converted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def check_tensor(
    name: str,
    t: Any,
    *,
    ndim: int | None = None,
    dtypes: tuple[torch.dtype, ...] | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Check a tensor's type, rank, dtype and device; raise ValueError naming ``name``."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(
            f"{name} must have dtype {names}; got {str(t.dtype).replace('torch.', '')}"
        )
    if device is not None and t.device != device:
        raise ValueError(
            f"{name} is on {t.device} but the trie is on {device}; "
            f"move one of them (e.g. trie = trie.to({str(t.device)!r}))"
        )
    return t


def row_major(t: torch.Tensor) -> torch.Tensor:
    """Return ``t`` with unit stride in its last dimension (copying only when needed)."""
    if t.dim() >= 1 and t.stride(-1) != 1:
        return t.contiguous()
    return t
