"""pytest plugin for tools/cuda_emu_check.sh: keeps torch's CUDA calls on the CPU.

The ops' emulated CUDA backend (``device=1`` of every ``_C`` op) reads host memory, so
``.cuda()`` and ``.to("cuda")`` return a CPU copy (a real transfer copies too), ``trie.to("cuda")``
returns its input,
``torch.cuda.synchronize`` does nothing and the current stream is 0. The tests that call ``_C``
with ``device=1`` (tests/cuda_testing.py ``native_op``) run the emulated kernels; the public ops
see CPU tensors and take the C++ path.
"""

from __future__ import annotations

import contextlib
import sys
import types

# An editable install (scikit-build-core) puts a finder for igdbeam ahead of sys.path, which would
# load the source tree with the installed _C; drop it so that build/emu (first on PYTHONPATH)
# supplies igdbeam with its emulated-CUDA _C.
sys.meta_path[:] = [
    f for f in sys.meta_path if not type(f).__module__.startswith("_editable_skbc_igdbeam")
]

import torch  # noqa: E402

import igdbeam  # noqa: E402
from igdbeam.native import library as _native  # noqa: E402

assert _native._C.has_cuda(), "build/emu must hold the emulated CUDA build"
torch.Tensor.cuda = lambda self, *a, **k: self.clone()  # type: ignore[method-assign]
torch.cuda.synchronize = lambda *a, **k: None
torch.cuda.is_available = lambda: True
torch.cuda.current_stream = lambda *a, **k: types.SimpleNamespace(cuda_stream=0)


class _EmulatedStream:
    """A side stream is the one emulated stream: work on it is done when the call returns."""

    cuda_stream = 0

    def __init__(self, *args, **kwargs) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def wait_stream(self, other) -> None:
        pass


torch.cuda.Stream = _EmulatedStream  # type: ignore[misc, assignment]
torch.cuda.stream = lambda *a, **k: contextlib.nullcontext()  # type: ignore[assignment]
_tensor_to = torch.Tensor.to


def _is_cuda(device) -> bool:
    return isinstance(device, (str, torch.device)) and torch.device(device).type == "cuda"


def _tensor_to_cpu_for_cuda(self, *args, **kwargs):
    if args and _is_cuda(args[0]):
        args = ("cpu", *args[1:])
    elif _is_cuda(kwargs.get("device")):
        kwargs["device"] = "cpu"
    else:
        return _tensor_to(self, *args, **kwargs)
    out = _tensor_to(self, *args, **kwargs)
    return out.clone() if out is self else out  # a real transfer copies


torch.Tensor.to = _tensor_to_cpu_for_cuda  # type: ignore[method-assign]
_to = igdbeam.ItemTrie.to


def _to_cpu_for_cuda(self, device):
    return self if torch.device(device).type == "cuda" else _to(self, device)


igdbeam.ItemTrie.to = _to_cpu_for_cuda  # type: ignore[method-assign]


def _cpu_device(fn):
    def wrapper(*args, **kwargs):
        dev = kwargs.get("device")
        if dev is not None and torch.device(dev).type == "cuda":
            kwargs["device"] = "cpu"
        return fn(*args, **kwargs)

    return wrapper


for _name in ("empty", "zeros", "ones", "full", "randn", "rand", "arange", "tensor", "empty_like"):
    setattr(torch, _name, _cpu_device(getattr(torch, _name)))
