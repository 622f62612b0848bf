"""Loads the compiled extension and reports which backends it was built with."""

from __future__ import annotations

try:
    from igdbeam import _C
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "igdbeam's native extension igdbeam._C could not be imported. Install the package with "
        "`pip install .` (or run tools/dev_build.sh for a development build); "
        f"the import failed with: {exc}"
    ) from exc

__all__ = ["_C", "built_with_cuda", "cuda_available"]


def cuda_available() -> bool:
    """Return True when igdbeam was compiled with its CUDA kernels *and* torch sees a GPU."""
    import torch

    return bool(_C.has_cuda()) and torch.cuda.is_available()


def built_with_cuda() -> bool:
    """Return True when the CUDA kernels were compiled in (a GPU may still be absent)."""
    return bool(_C.has_cuda())
