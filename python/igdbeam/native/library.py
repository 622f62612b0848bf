"""Loads the compiled extension and reports which backends it was built with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    from igdbeam import _C  # type: ignore[attr-defined]
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "igdbeam's native extension igdbeam._C could not be imported. Install the package with "
        "`pip install .` (or run tools/dev_build.sh for a development build); "
        f"the import failed with: {exc}"
    ) from exc

__all__ = ["_C", "built_with_cuda", "cuda_available"]

CUDA_OPS = ("walk_paths", "label_weights", "processor_step", "beam_step")


def _raise_on_status(name: str, op: Callable[..., Any]) -> Callable[..., None]:
    """Wrap a ``<op>_cuda_status`` binding so that a failed status raises a Python exception.

    The CUDA bindings return ``None`` or ``(code, message)`` instead of throwing a C++ exception
    (code 1: invalid argument -> ValueError, else RuntimeError with the CUDA error string).
    """

    def call(*args: Any) -> None:
        status = op(*args)
        if status is not None:
            code, message = status
            raise (ValueError if code == 1 else RuntimeError)(message)

    call.__name__ = f"{name}_cuda"
    call.__doc__ = op.__doc__
    return call


for _name in CUDA_OPS:
    _raw = getattr(_C, f"{_name}_cuda_status", None)
    if _raw is not None:
        setattr(_C, f"{_name}_cuda", _raise_on_status(_name, _raw))


def cuda_available() -> bool:
    """Return True when igdbeam was compiled with its CUDA kernels *and* torch sees a GPU."""
    import torch

    return bool(_C.has_cuda()) and torch.cuda.is_available()


def built_with_cuda() -> bool:
    """Return True when the CUDA kernels were compiled in (a GPU may still be absent)."""
    return bool(_C.has_cuda())
