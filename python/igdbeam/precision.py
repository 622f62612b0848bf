"""Compute precision: what ``--dtype auto|float32|bfloat16`` means on this machine.

``auto`` picks bfloat16 where the hardware runs it natively and float32 elsewhere:

* a CUDA device with bfloat16 tensor cores (``torch.cuda.is_bf16_supported``);
* a CPU with AVX512-BF16 or AMX-BF16 instructions (oneDNN then runs bfloat16 matrix products
  at about twice the float32 speed; measured in ``benchmarks/bench_precision.py``).

Training and decoding use the resolved dtype differently (see
:func:`igdbeam.app.pipeline.train_model`): a LoRA fine-tune keeps the frozen base weights in
bfloat16 and the adapter weights in float32; a full fine-tune keeps float32 master weights and
runs the forward and backward passes under bfloat16 autocast. Decoding runs the model in the
dtype; igdbeam's beam step accumulates in float32 whatever the logits' dtype.

Asking for bfloat16 explicitly on a CPU without those instructions works but is emulated, and
far slower than float32 (a SmolLM2 LoRA training step: about 270 s against 9 s on an AVX2-only
CPU); :func:`resolve_dtype` then warns once per process with
:class:`EmulatedPrecisionWarning`.
"""

from __future__ import annotations

import warnings
from functools import cache

import torch

__all__ = [
    "DTYPE_CHOICES",
    "EmulatedPrecisionWarning",
    "bf16_is_native",
    "dtype_name",
    "resolve_dtype",
]

DTYPE_CHOICES = ("auto", "float32", "bfloat16")
_BY_NAME = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class EmulatedPrecisionWarning(UserWarning):
    """bfloat16 was asked for on a CPU that emulates it (no AVX512-BF16 / AMX-BF16)."""


@cache
def _warn_emulated() -> None:
    """Warn, once per process, that bfloat16 is emulated on this CPU."""
    warnings.warn(
        "bfloat16 was asked for, but this CPU has neither AVX512-BF16 nor AMX-BF16: it runs "
        "emulated, far slower than float32 (a SmolLM2 LoRA training step took about 270 s "
        "against 9 s on an AVX2-only CPU); '--dtype auto' picks float32 here",
        EmulatedPrecisionWarning,
        stacklevel=3,
    )


@cache
def _cpu_has_bf16() -> bool:
    """True when this CPU has AVX512-BF16 or AMX-BF16 (read from torch, then /proc/cpuinfo)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in probes:
        probe = getattr(torch.cpu, name, None)
        if probe is not None:
            try:
                if probe():
                    return True
            except RuntimeError:  # pragma: no cover - a torch build without the probe's backend
                pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = f.read()
    except OSError:  # pragma: no cover - not Linux
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def bf16_is_native(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` runs bfloat16 matrix products natively (see the module docstring)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type == "cpu":
        return _cpu_has_bf16()
    return False


def resolve_dtype(
    dtype: str | torch.dtype | None, device: str | torch.device = "cpu"
) -> torch.dtype:
    """The torch dtype of a ``--dtype`` value: ``auto``, ``float32`` or ``bfloat16``.

    Args:
        dtype: one of :data:`DTYPE_CHOICES`, ``torch.float32`` / ``torch.bfloat16``, or None
            (same as ``float32``: the exact reference precision).
        device: the device the model runs on (``auto`` asks whether it runs bfloat16 natively).

    Warns:
        EmulatedPrecisionWarning: bfloat16 asked for on a CPU that emulates it (once per
            process).

    Raises:
        ValueError: any other value (float16 is refused: its range overflows in the IG-weighted
            loss's log-probabilities of rare titles and it has no speed advantage on CPUs).
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be float32 or bfloat16, got {dtype}")
        resolved = dtype
    elif not isinstance(dtype, str) or dtype not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {dtype!r}")
    elif dtype == "auto":
        return torch.bfloat16 if bf16_is_native(device) else torch.float32
    else:
        resolved = _BY_NAME[dtype]
    if resolved == torch.bfloat16 and torch.device(device).type == "cpu" and not _cpu_has_bf16():
        _warn_emulated()
    return resolved


def dtype_name(dtype: torch.dtype) -> str:
    """``"float32"`` / ``"bfloat16"``: the name recorded in result files."""
    return str(dtype).removeprefix("torch.")
