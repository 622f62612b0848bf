#!/usr/bin/env bash
# Diagnostics of how native errors reach Python in a CUDA build (run after the build step of
# gpu_check.sh): a CPU-side and a CUDA-side invalid argument, each in its own process. The ops
# return None or (code, message) on both backends; igdbeam.native.dispatch raises the typed error.
set -u
python3 - <<'PY' 2>&1 | tail -3
import igdbeam
try:
    igdbeam.ItemTrie.from_token_ids([])
except ValueError as e:
    print("cpu error OK:", e)
PY
echo "cpu rc=$?"
python3 - <<'PY' 2>&1 | tail -4
import torch, igdbeam
from igdbeam.errors import NativeArgumentError
from igdbeam.native.dispatch import run_op
from igdbeam.native.library import _C
t = igdbeam.ItemTrie.from_token_ids([[10, 2], [11, 2]]).to("cuda")
x = torch.zeros(2, 16, device="cuda")
# num_candidates = 0 after the five null output pointers, no filter, automatic slices.
args = (t.native_view(), x.data_ptr(), 0, 1, 2, 16, 16, 0, 0, 0.1, 1.0, False, 0,
        0, 0, 0, 0, 0, 0, 0, 0.0, 0, 0, 0, 0)
print("status:", _C.beam_step(*args, 1, torch.cuda.current_stream().cuda_stream), flush=True)
try:
    run_op("beam_step", *args, device_of=x)
except NativeArgumentError as e:
    print("cuda error OK:", e)
PY
echo "cuda rc=$?"
