"""CUDA benchmarks of the fused beam step (pytest-benchmark; skipped without a GPU).

The fused step at batch 64 x 10 beams and a 151,936-token vocabulary is compared with
(a) the time to read the step's logits once (``logits.sum()``: the memory-bandwidth bound) and
(b) the torch code a user would otherwise write: log_softmax, a -inf mask filled with the
reweighted children, and topk over beams * vocab per batch row (the children's row/token/weight
index tensors are built once, outside the timing, which flatters the baseline).

    pytest benchmarks/bench_cuda.py --benchmark-json out/bench.json   # pytest-benchmark
    python benchmarks/bench_cuda.py --json out/ratios.json            # CUDA-event ratio table
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

import numpy as np
import pytest
import torch

import igdbeam
from igdbeam.native import library as _native
from igdbeam.native.dispatch import DEVICE_CUDA, raise_for_status

_C = _native._C
DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
NO_FILTER = (0, 0, 0.0, 0, 0)  # node_mask, node_score, score_weight, filter_rows, row stride
BATCH, BEAMS, VOCAB, K = 64, 10, 151_936, 20
ALPHA = 0.2

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not igdbeam.cuda_available(), reason="needs a CUDA GPU"),
]


# ------------------------------------------------------------------------------------- setup
def make_trie(seed: int = 0, items: int = 200_000) -> igdbeam.ItemTrie:
    """A catalog shaped like tokenized titles: a 20k-token first level, 3-8 tokens per item."""
    rng = np.random.default_rng(seed)
    first = rng.choice(np.arange(3, VOCAB), size=20_000, replace=False)
    lengths = rng.integers(2, 8, size=items)
    body = rng.integers(3, VOCAB, size=(items, 9))
    body[:, 0] = first[np.arange(items) % 20_000]
    body[np.arange(items), lengths + 1] = 2  # terminator after 1 + lengths tokens
    paths = [row[: n + 2] for row, n in zip(body.tolist(), lengths.tolist(), strict=True)]
    return igdbeam.ItemTrie.from_token_ids(paths, vocab_size=VOCAB)


class Case:
    """Inputs of one step: logits, beam scores, nodes and the baseline's index tensors."""

    def __init__(self, trie: igdbeam.ItemTrie, dtype: torch.dtype, where: str, seed: int = 0):
        g = torch.Generator(device="cuda").manual_seed(seed)
        rows = BATCH * BEAMS
        self.trie = trie.to("cuda")
        self.logits = (torch.randn(rows, VOCAB, device="cuda", generator=g) * 3).to(dtype)
        self.beam_scores = -torch.rand(rows, device="cuda", generator=g) * 10
        off = trie.child_offsets.numpy()
        rng = np.random.default_rng(seed)
        if where == "root":
            nodes = np.zeros(rows, dtype=np.int32)
        else:  # mid-decode: beams at depth 1..3 inner nodes
            depth = trie.depth.numpy()
            inner = np.nonzero((off[1:] > off[:-1]) & (depth[:] >= 1) & (depth[:] <= 3))[0]
            nodes = rng.choice(inner, size=rows).astype(np.int32)
        self.nodes = torch.from_numpy(nodes).cuda()
        tok = trie.token.numpy()
        ign = trie.info_gain_norm.numpy()
        r_idx, t_idx, w = [], [], []
        for r, n in enumerate(nodes):
            lo, hi = int(off[n]), int(off[n + 1])
            r_idx.append(np.full(hi - lo, r))
            t_idx.append(tok[lo:hi])
            w.append(1.0 - ALPHA * ign[lo:hi])
        self.cand_rows = torch.from_numpy(np.concatenate(r_idx)).long().cuda()
        self.cand_tokens = torch.from_numpy(np.concatenate(t_idx)).long().cuda()
        self.cand_w = torch.from_numpy(np.concatenate(w)).float().cuda()
        shape = (BATCH, K)
        self.out = [
            torch.empty(shape, dtype=torch.float32, device="cuda"),
            torch.empty(shape, dtype=torch.float32, device="cuda"),
            torch.empty(shape, dtype=torch.int32, device="cuda"),
            torch.empty(shape, dtype=torch.int64, device="cuda"),
            torch.empty(shape, dtype=torch.int32, device="cuda"),
        ]
        self.bytes = self.logits.numel() * self.logits.element_size()
        # The candidate bound igdbeam.generate passes: all beams at the root or below it.
        root_fanout, inner_fanout = trie.fanout_bounds()
        self.bound = BEAMS * (root_fanout if where == "root" else inner_fanout)

    def fused(self) -> None:
        x = self.logits
        raise_for_status("beam_step", _C.beam_step(
            self.trie.native_view(), x.data_ptr(), DTYPES[x.dtype], BATCH, BEAMS, VOCAB,
            x.stride(0), self.beam_scores.data_ptr(), self.nodes.data_ptr(), ALPHA, 1.0, False, K,
            *(t.data_ptr() for t in self.out), *NO_FILTER, 0, self.bound, DEVICE_CUDA,
            int(torch.cuda.current_stream().cuda_stream),
        ))  # fmt: skip

    def read_once(self) -> torch.Tensor:
        return self.logits.sum(dtype=torch.float32)

    def torch_baseline(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logp = torch.log_softmax(self.logits.float(), dim=-1)
        scores = torch.full_like(logp, float("-inf"))
        picked = logp[self.cand_rows, self.cand_tokens]
        scores[self.cand_rows, self.cand_tokens] = (
            self.beam_scores[self.cand_rows] + self.cand_w * picked
        )
        top = scores.view(BATCH, BEAMS * VOCAB).topk(K, dim=-1)
        return top.values, top.indices // VOCAB, top.indices % VOCAB


def cuda_time_ms(fn: Callable[[], object], warmup: int = 5, iters: int = 40) -> float:
    """Median milliseconds of fn over iters, each bracketed by CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def check_against_torch(case: Case) -> None:
    """The fused step's scores equal the torch baseline's (a correctness check before timing)."""
    case.fused()
    values, beam, token = case.torch_baseline()
    torch.cuda.synchronize()
    torch.testing.assert_close(case.out[0], values, atol=2e-3, rtol=1e-4)


# ------------------------------------------------------------------------------ pytest-benchmark
@pytest.fixture(scope="module")
def trie() -> igdbeam.ItemTrie:
    return make_trie()


def _bench(benchmark, fn) -> None:
    def run() -> None:
        fn()
        torch.cuda.synchronize()

    benchmark.pedantic(run, rounds=20, warmup_rounds=3, iterations=1)


@pytest.mark.parametrize("where", ["mid", "root"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("impl", ["fused", "read_once", "torch"])
def test_beam_step_64x10_vocab151936(benchmark, trie, impl, dtype, where) -> None:
    case = Case(trie, dtype, where)
    if impl == "fused":
        check_against_torch(case)
    fn = {"fused": case.fused, "read_once": case.read_once, "torch": case.torch_baseline}[impl]
    benchmark.group = f"beam_step {str(dtype).replace('torch.', '')} {where}"
    benchmark.extra_info.update(
        {"batch": BATCH, "beams": BEAMS, "vocab": VOCAB, "k": K, "logits_bytes": case.bytes}
    )
    _bench(benchmark, fn)


# ------------------------------------------------------------------------------ ratio table
def ratio_table() -> list[dict]:
    trie = make_trie()
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        for where in ("mid", "root"):
            case = Case(trie, dtype, where)
            check_against_torch(case)
            t_fused = cuda_time_ms(case.fused)
            t_read = cuda_time_ms(case.read_once)
            t_torch = cuda_time_ms(case.torch_baseline, iters=15)
            rows.append(
                {
                    "dtype": str(dtype).replace("torch.", ""),
                    "nodes": where,
                    "candidates": int(case.cand_rows.numel()),
                    "logits_MB": case.bytes / 1e6,
                    "read_once_us": t_read * 1e3,
                    "read_GBps": case.bytes / t_read / 1e6,
                    "fused_us": t_fused * 1e3,
                    "fused_GBps": case.bytes / t_fused / 1e6,
                    "fused_over_read": t_fused / t_read,
                    "torch_us": t_torch * 1e3,
                    "speedup_vs_torch": t_torch / t_fused,
                }
            )
            del case
            torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="write the table as JSON here")
    args = parser.parse_args(argv)
    if not igdbeam.cuda_available():
        print("no CUDA GPU or no CUDA build of igdbeam: nothing to benchmark")
        return 0
    print(f"device: {torch.cuda.get_device_name()}  batch {BATCH} x beams {BEAMS}, vocab {VOCAB}")
    rows = ratio_table()
    head = (
        f"{'dtype':9} {'nodes':5} {'cands':>8} {'MB':>7} {'read us':>8} {'GB/s':>6} "
        f"{'fused us':>9} {'GB/s':>6} {'fused/read':>10} {'torch us':>9} {'x torch':>8}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['dtype']:9} {r['nodes']:5} {r['candidates']:>8} {r['logits_MB']:>7.1f} "
            f"{r['read_once_us']:>8.1f} {r['read_GBps']:>6.0f} {r['fused_us']:>9.1f} "
            f"{r['fused_GBps']:>6.0f} {r['fused_over_read']:>10.2f} {r['torch_us']:>9.1f} "
            f"{r['speedup_vs_torch']:>8.1f}"
        )
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
