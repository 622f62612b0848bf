"""CUDA check of the fused beam step's split select: every slice count gives the same bits, and
the time of each (CUDA events) against reading the logits once, for bench_cuda.py's cases.

    python -m benchmarks.bench_select_slices   # from the repository root; needs a GPU and a
                                                # CUDA build of igdbeam

Slice count 0 is the step's own choice; a positive count is forced through the internal
binding's ``select_slices`` argument (only the CUDA launch reads it).
"""

from __future__ import annotations

import torch

from benchmarks.bench_cuda import (
    _C,
    ALPHA,
    BATCH,
    BEAMS,
    DTYPES,
    NO_FILTER,
    VOCAB,
    Case,
    cuda_time_ms,
    make_trie,
)
from igdbeam.native.dispatch import DEVICE_CUDA, raise_for_status


def fused(case: Case, slices: int, out: list[torch.Tensor], renormalize: bool = False) -> None:
    x = case.logits
    raise_for_status("beam_step", _C.beam_step(
        case.trie.native_view(), x.data_ptr(), DTYPES[x.dtype], BATCH, BEAMS, VOCAB, x.stride(0),
        case.beam_scores.data_ptr(), case.nodes.data_ptr(), ALPHA, 1.0, renormalize,
        out[0].shape[1], *(t.data_ptr() for t in out), *NO_FILTER, slices, case.bound,
        DEVICE_CUDA, int(torch.cuda.current_stream().cuda_stream),
    ))  # fmt: skip


def check_and_time(case: Case, label: str) -> None:
    """Asserts equal outputs for several slice counts, then prints the times of each."""
    for k in (20, 300):
        shape = (BATCH, k)
        for renorm in (False, True):
            ref = None
            for s in (1, 0, 3, 17):
                out = [torch.empty(shape, dtype=t.dtype, device="cuda") for t in case.out]
                fused(case, s, out, renorm)
                torch.cuda.synchronize()
                ref = ref or out
                same = all(torch.equal(a, b) for a, b in zip(out, ref, strict=True))
                assert same, (label, k, renorm, s)
    t_read = cuda_time_ms(case.read_once)
    for renorm in (False, True):
        line = f"{label} renorm={renorm:d} read {t_read * 1e3:6.1f} us |"
        for s in (1, 0, 2, 4, 8, 16, 32):
            t = cuda_time_ms(lambda s=s, renorm=renorm: fused(case, s, case.out, renorm))
            line += f" S{s} {t * 1e3:6.1f} ({t / t_read:.2f}x)"
        print(line, flush=True)


def main() -> None:
    trie = make_trie()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"{torch.cuda.get_device_name()}: {sms} SMs, trie max_fanout {trie.max_fanout}")
    for dtype in (torch.bfloat16, torch.float32):
        for where in ("mid", "root"):
            check_and_time(Case(trie, dtype, where), f"{dtype!s:15} {where:4}")
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
