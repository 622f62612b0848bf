"""The one path into the native ops: shared checks, status codes and their typed errors (CPU)."""

from __future__ import annotations

import pytest
import torch

import igdbeam
from igdbeam.errors import (
    IGDBeamError,
    LeftTrieError,
    MissingCudaKernelsError,
    NativeArgumentError,
    NativeRuntimeError,
)
from igdbeam.native.dispatch import DEVICE_CPU, DEVICE_CUDA, raise_for_status, run_op
from igdbeam.native.library import _C

PATHS = [[10, 11, 2], [10, 12, 2], [20, 2]]
NO_FILTER = (0, 0, 0.0, 0, 0)


@pytest.fixture(scope="module")
def trie() -> igdbeam.ItemTrie:
    return igdbeam.ItemTrie.from_token_ids(PATHS)


def _beam_step_args(trie: igdbeam.ItemTrie, *, dtype_code: int = 0, nodes=(0,)):
    """One unfiltered beam step over one batch row (the tensors ride along to stay alive)."""
    vocab = 32
    logits = torch.zeros(len(nodes), vocab)
    bs = torch.zeros(len(nodes))
    nd = torch.tensor(nodes, dtype=torch.int32)
    out = [torch.empty(1, 2, dtype=dt) for dt in (torch.float32,) * 2 + (torch.int32,)]
    out += [torch.empty(1, 2, dtype=torch.int64), torch.empty(1, 2, dtype=torch.int32)]
    args = (trie.native_view(), logits.data_ptr(), dtype_code, 1, len(nodes), vocab, vocab,
            bs.data_ptr(), nd.data_ptr(), 0.0, 1.0, False, 2, *(t.data_ptr() for t in out),
            *NO_FILTER, 0, 0)  # fmt: skip
    return args, (logits, bs, nd, out)


@pytest.mark.parametrize("device", [DEVICE_CPU, DEVICE_CUDA])
def test_shared_checks_run_before_either_backend(trie, device: int) -> None:
    """A bad dtype code gets the same code-1 status on both backends (and in a build without
    CUDA kernels too: the shared checks come before the backend is chosen)."""
    args, _keep = _beam_step_args(trie, dtype_code=7)
    status = _C.beam_step(*args, device, 0)
    assert status is not None and status[0] == 1
    assert "dtype_code must be 0 (float32), 1 (bfloat16) or 2 (float16), got 7" in status[1]


def test_device_and_stream_arguments_are_checked(trie) -> None:
    args, _keep = _beam_step_args(trie)
    assert _C.beam_step(*args, DEVICE_CPU, 0) is None
    code, message = _C.beam_step(*args, 2, 0)
    assert code == 1 and "device must be 0 (CPU) or 1 (CUDA)" in message
    code, message = _C.beam_step(*args, DEVICE_CPU, 12345)
    assert code == 1 and "stream must be 0 on the CPU" in message


@pytest.mark.skipif(_C.has_cuda(), reason="this build has CUDA kernels")
def test_cuda_device_without_cuda_kernels_is_code_3(trie) -> None:
    args, _keep = _beam_step_args(trie)
    code, message = _C.beam_step(*args, DEVICE_CUDA, 0)
    assert code == 3 and "no CUDA kernels" in message
    with pytest.raises(MissingCudaKernelsError, match="IGDBEAM_CUDA=ON"):
        raise_for_status("beam_step", (code, message))


def test_cpu_kernel_errors_become_native_argument_errors(trie) -> None:
    """A node id past the trie: only the C++ kernel can see it (it reads the ids)."""
    args, _keep = _beam_step_args(trie, nodes=(99,))
    code, message = _C.beam_step(*args, DEVICE_CPU, 0)
    assert code == 1 and "nodes[0] = 99 is not a node of the trie" in message
    with pytest.raises(NativeArgumentError, match="nodes\\[0\\] = 99") as info:
        nodes = torch.tensor([99], dtype=torch.int32)
        igdbeam.beam_step(
            trie, torch.zeros(1, 32), torch.zeros(1), nodes, beams=1, num_candidates=2
        )
    assert isinstance(info.value, ValueError) and isinstance(info.value, IGDBeamError)


@pytest.mark.parametrize(
    ("status", "error", "base"),
    [
        ((1, "bad"), NativeArgumentError, ValueError),
        ((2, "launch failed"), NativeRuntimeError, RuntimeError),
        ((3, "none"), MissingCudaKernelsError, RuntimeError),
    ],
)
def test_status_codes_map_to_typed_errors(status, error, base) -> None:
    raise_for_status("op", None)  # success: nothing
    with pytest.raises(error) as info:
        raise_for_status("op", status)
    assert isinstance(info.value, base) and isinstance(info.value, IGDBeamError)
    assert str(info.value).startswith("op")


def test_run_op_refuses_other_devices(trie) -> None:
    with pytest.raises(ValueError, match="CPU and CUDA tensors only"):
        run_op(
            "walk_paths",
            trie.native_view(),
            0,
            0,
            0,
            0,
            0,
            0,
            device_of=torch.empty(0, device="meta"),
        )


def test_run_op_walks_on_the_cpu(trie) -> None:
    tokens = torch.tensor([[10, 12, 2], [20, 2, 0]])
    lengths = torch.tensor([3, 2])
    out = torch.empty(2, dtype=torch.int32)
    run_op("walk_paths", trie.native_view(), tokens.data_ptr(), 2, 3, 3, lengths.data_ptr(),
           out.data_ptr(), device_of=tokens)  # fmt: skip
    assert out.tolist() == trie.walk(tokens, lengths).tolist()
    assert (out >= 0).all()
    lengths[1] = 9  # past cols: the C++ kernel refuses it
    with pytest.raises(NativeArgumentError, match="lengths\\[1\\] = 9"):
        run_op("walk_paths", trie.native_view(), tokens.data_ptr(), 2, 3, 3, lengths.data_ptr(),
               out.data_ptr(), device_of=tokens)  # fmt: skip


def test_left_trie_error_under_the_error_policy(trie) -> None:
    labels = torch.tensor([[-100, 10, 11, 2], [-100, 10, 13, 2]])
    with pytest.raises(LeftTrieError, match="row\\(s\\) \\[1\\]") as info:
        igdbeam.label_token_weights(labels, trie, 0.5, off_trie="error")
    assert isinstance(info.value, ValueError)
    ok = igdbeam.label_token_weights(labels, trie, 0.5, off_trie="uniform")
    assert ok.row_status.tolist() == [0, 1]
