"""The one path into the native ops: pick the backend from a tensor, call, raise typed errors.

Every op of ``igdbeam._C`` (``walk_paths``, ``label_weights``, ``processor_step``, ``beam_step``,
``build_node_filters``) takes one argument list for both backends, followed by ``device``
(:data:`DEVICE_CPU` or :data:`DEVICE_CUDA`) and ``stream`` (the CUDA stream handle, 0 on the
CPU), and returns None or ``(code, message)`` instead of raising (``csrc/bindings/README.md``).
:func:`run_op` supplies the two trailing arguments and turns a failed status into the typed error
of :mod:`igdbeam.errors`. Its callers are the kernels of the registered ops
(:mod:`igdbeam.native.torch_ops`), which order the arguments by :mod:`igdbeam.native.op_table`.
"""

from __future__ import annotations

from typing import Any

import torch

from igdbeam.errors import MissingCudaKernelsError, NativeArgumentError, NativeRuntimeError
from igdbeam.native.library import _C

__all__ = [
    "DEVICE_CPU",
    "DEVICE_CUDA",
    "STATUS_INVALID_ARGUMENT",
    "STATUS_NO_CUDA",
    "STATUS_RUNTIME_ERROR",
    "raise_for_status",
    "run_op",
]

DEVICE_CPU, DEVICE_CUDA = 0, 1
STATUS_INVALID_ARGUMENT, STATUS_RUNTIME_ERROR, STATUS_NO_CUDA = 1, 2, 3


def _missing_cuda_message(op: str) -> str:
    return (
        f"{op} got CUDA tensors but this igdbeam build has no CUDA kernels; reinstall with a "
        "CUDA compiler on PATH (IGDBEAM_CUDA=ON pip install .) or move the inputs to the CPU"
    )


def raise_for_status(op: str, status: tuple[int, str] | None) -> None:
    """Raise the typed error of a native op's returned status; do nothing for None (success).

    Raises:
        NativeArgumentError: code 1, the op refused its arguments (a ValueError).
        NativeRuntimeError: code 2, a CUDA or internal error while running (a RuntimeError).
        MissingCudaKernelsError: code 3, CUDA asked of a build without CUDA kernels.
    """
    if status is None:
        return
    code, message = status
    if code == STATUS_INVALID_ARGUMENT:
        raise NativeArgumentError(f"{op}: {message}")
    if code == STATUS_NO_CUDA:
        raise MissingCudaKernelsError(_missing_cuda_message(op))
    raise NativeRuntimeError(f"{op} failed (status {code}): {message}")


def run_op(name: str, *args: Any, device_of: torch.Tensor) -> None:
    """Run ``_C.<name>(*args, device, stream)`` on the backend of ``device_of``'s device.

    CPU tensors run the C++ kernel (stream 0); CUDA tensors run the CUDA kernel on the current
    stream of that device (enqueued only: nothing synchronises the host), with that device made
    current for the call. ``args`` are the op's shared arguments: plain ints, floats and bools,
    pointers from ``data_ptr()`` of tensors that the caller keeps alive and has checked.

    Raises:
        MissingCudaKernelsError: CUDA tensors with a build that has no CUDA kernels.
        ValueError: tensors on a device other than the CPU or a CUDA GPU.
        NativeArgumentError, NativeRuntimeError: see :func:`raise_for_status`.
    """
    op = getattr(_C, name)
    device = device_of.device
    if device.type == "cpu":
        status = op(*args, DEVICE_CPU, 0)
    elif device.type == "cuda":  # a build without CUDA kernels answers status 3
        with torch.cuda.device(device):
            stream = int(torch.cuda.current_stream(device).cuda_stream)
            status = op(*args, DEVICE_CUDA, stream)
    else:
        raise ValueError(
            f"{name} got tensors on {device}; igdbeam runs on CPU and CUDA tensors only"
        )
    raise_for_status(name, status)
