"""Typed exceptions of igdbeam.

Every class derives from :class:`IGDBeamError`, so ``except igdbeam.IGDBeamError`` catches any of
them, and the input errors also derive from :class:`ValueError`, so code written against plain
``ValueError`` keeps working.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch

__all__ = [
    "CudaUnavailableError",
    "IGDBeamError",
    "InvalidIdError",
    "LeftTrieError",
    "MissingCudaKernelsError",
    "NativeArgumentError",
    "NativeRuntimeError",
    "TrieFormatError",
    "VocabularyError",
    "as_device",
    "as_id_array",
    "as_index",
]


class IGDBeamError(Exception):
    """Base class of the exceptions igdbeam raises on purpose."""


class TrieFormatError(IGDBeamError, ValueError):
    """A trie file (or a trie's arrays) is not a valid igdbeam trie: bad magic, version, header,
    truncated data, or arrays whose ranges or invariants do not hold (see ``ItemTrie.load``)."""


class VocabularyError(IGDBeamError, ValueError):
    """A token id lies outside the vocabulary it is used with (e.g. a trie token id ``>=`` the
    number of score columns, or a label ``>= vocab_size``)."""


class InvalidIdError(IGDBeamError, ValueError):
    """An id (token, item or node id) is not an integer (a float, a bool, NaN, a string) or is
    negative / out of its range."""


class LeftTrieError(IGDBeamError, ValueError):
    """A label row's completion is not an item path of the trie (a token that is not a child of
    the prefix, or tokens after a complete item) under ``off_trie="error"``; the message names
    the rows and the first offending token."""


class NativeArgumentError(IGDBeamError, ValueError):
    """A native op (C++ or CUDA) refused its arguments (status code 1): bad shapes, codes or ids
    that the Python checks let through, e.g. a node id past the trie or a corrupt trie."""


class NativeRuntimeError(IGDBeamError, RuntimeError):
    """A native op failed while running (status code 2): a CUDA launch or allocation error (the
    message carries the CUDA error string and the file:line) or an internal invariant."""


class MissingCudaKernelsError(IGDBeamError, RuntimeError):
    """CUDA tensors reached an op of an igdbeam build without CUDA kernels (status code 3);
    reinstall with a CUDA compiler (``IGDBEAM_CUDA=ON pip install .``) or use CPU tensors."""


class CudaUnavailableError(IGDBeamError, RuntimeError):
    """A CUDA device was asked for where none can be used: torch sees no CUDA GPU (a CPU-only
    torch build, no driver, ``CUDA_VISIBLE_DEVICES`` empty) or the device index does not
    exist. The message says which, and how to run on the CPU instead."""


def as_device(device: Any, name: str = "device") -> torch.device:
    """Return ``device`` as a ``torch.device`` that this process can use.

    Raises:
        CudaUnavailableError: a CUDA device without a usable GPU, or an index past the GPUs.
        ValueError: not a device (torch's own message, naming ``name``).
    """
    if isinstance(device, bool) or not isinstance(device, str | torch.device | int):
        raise ValueError(f"{name} must be a device such as 'cpu' or 'cuda', got {device!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{name} {device!r} is not a device: {exc}") from None
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        why = (
            "this torch is a CPU-only build"
            if torch.version.cuda is None
            else f"torch (CUDA {torch.version.cuda}) finds no usable GPU"
        )
        raise CudaUnavailableError(
            f"{name} {str(dev)!r} asks for a CUDA GPU, but {why}; use 'cpu' instead (or install "
            "a CUDA build of torch on a machine with an NVIDIA GPU)"
        )
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise CudaUnavailableError(
            f"{name} {str(dev)!r} does not exist: this process sees {count} CUDA GPU(s) "
            f"(cuda:0 .. cuda:{count - 1})"
        )
    return dev


# ---------------------------------------------------------------------------------- id checks
def _is_integer_type(t: type) -> bool:
    """True for Python / numpy integer types; bools are not ids."""
    return issubclass(t, int | np.integer) and not issubclass(t, bool | np.bool_)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{text} ({type(value).__name__})" if not isinstance(value, str) else text


def as_index(value: Any, name: str) -> int:
    """Return ``value`` as a Python int, or raise :class:`InvalidIdError` naming ``name``.

    Accepts Python and numpy integers and 0-d integer tensors; rejects bools, floats (even
    integral ones such as ``3.0``: a float id is almost always a column that went through NaN),
    strings and everything else, instead of truncating them.
    """
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or not _is_integer_dtype(value.dtype):
            raise InvalidIdError(
                f"{name} must be an integer, got a {value.dtype} tensor of shape "
                f"{tuple(value.shape)}"
            )
        return int(value.item())
    if not _is_integer_type(type(value)):
        raise InvalidIdError(f"{name} must be an integer, got {_describe(value)}")
    return operator.index(value)


def _is_integer_dtype(dtype: torch.dtype | np.dtype) -> bool:
    if isinstance(dtype, torch.dtype):
        return dtype in _TORCH_INT_DTYPES
    return np.dtype(dtype).kind in "iu"


_TORCH_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def first_non_integer(values: list[Any]) -> int:
    """Index of the first element of ``values`` that is not an integer id, or -1 when all are.

    One pass over the element types in C (``set(map(type, ...))``); a slow scan only on failure.
    """
    types = set(map(type, values))
    if all(_is_integer_type(t) for t in types):
        return -1
    return next(i for i, v in enumerate(values) if not _is_integer_type(type(v)))


def as_id_array(values: Any, name: str) -> np.ndarray:
    """Return integer ids as a contiguous int64 numpy array of the same shape.

    Tensors and arrays must have an integer dtype (not bool, not floating point); other
    iterables are read as a flat sequence whose elements must all be Python / numpy integers.

    Raises:
        InvalidIdError: a non-integer dtype or element (names ``name`` and the position), or ids
            that do not fit in int64.
    """
    if isinstance(values, torch.Tensor):
        if not _is_integer_dtype(values.dtype):
            raise InvalidIdError(f"{name} must hold integer ids, got dtype {values.dtype}")
        return np.ascontiguousarray(values.detach().cpu().numpy(), dtype=np.int64)
    if isinstance(values, np.ndarray) and values.dtype != object:
        if not _is_integer_dtype(values.dtype):
            raise InvalidIdError(f"{name} must hold integer ids, got dtype {values.dtype}")
        if values.dtype == np.uint64 and values.size and int(values.max()) > _INT64_MAX:
            raise InvalidIdError(f"{name} holds ids that do not fit in 64 bits")
        return np.ascontiguousarray(values, dtype=np.int64)
    if isinstance(values, str | bytes):
        raise InvalidIdError(f"{name} must be a sequence of integer ids, got a string")
    flat = list(values.reshape(-1) if isinstance(values, np.ndarray) else values)
    bad = first_non_integer(flat)
    if bad >= 0:
        raise InvalidIdError(
            f"{name}[{bad}] = {_describe(flat[bad])} is not an integer id; ids must be ints "
            "(not floats, bools or NaN)"
        )
    try:
        return np.fromiter(flat, dtype=np.int64, count=len(flat))
    except OverflowError:
        raise InvalidIdError(f"{name} holds ids that do not fit in 64 bits") from None


_INT64_MAX = 2**63 - 1
