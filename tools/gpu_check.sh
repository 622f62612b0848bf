#!/usr/bin/env bash
# One-shot GPU check of the CUDA backend (run on the H100/H200 machine from the repo root).
#   1. builds and installs igdbeam with the CUDA kernels for sm_90 only (fast);
#   2. runs every test marked `cuda`;
#   3. prints the fused beam step's ratio table (CUDA events) and the split select's slice table
#      (GPU_CHECK_FULL=1 adds tools/gpu_diag.sh and the pytest-benchmark rounds);
#   4. runs the end-to-end GPU benchmarks (generate, training step) of bench_cuda_e2e.py.
# Logs and JSON are packed into $OUT/gpu_results.tgz (default ./out). Each step is bounded by `timeout`; a failing step
# is recorded in $OUT/summary.txt and the later steps still run, so one run gives all the facts.
set -uo pipefail
cd "$(dirname "$0")/.."
FINAL_OUT=${OUT:-./out}
mkdir -p "$FINAL_OUT"
FINAL_OUT=$(cd "$FINAL_OUT" && pwd)
# Everything is written to a work folder, then packed: the GPU tool returns at most 8 files.
OUT=$(mktemp -d)
summary="$OUT/summary.txt"
pack() {
  tar -C "$OUT" -czf "$FINAL_OUT/gpu_results.tgz" .
  cp "$OUT/summary.txt" "$FINAL_OUT/" 2>/dev/null
  cp "$OUT/tests.log" "$OUT/e2e.log" "$OUT/ratios.log" "$OUT/slices.log" "$FINAL_OUT/" 2>/dev/null
  return 0
}
trap pack EXIT
: >"$summary"

step() {  # step NAME SECONDS COMMAND...: run with a timeout, log to $OUT/NAME.log, record status
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc ($((SECONDS - t0)) s)" | tee -a "$summary"
  tail -n 25 "$OUT/$name.log"
  return $rc
}

{ nvidia-smi; python3 -c "import torch; print(torch.__version__, torch.version.cuda)"; nvcc --version; } \
  >"$OUT/env.log" 2>&1

if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
export IGDBEAM_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=16
if ! step build 200 python3 -m pip install --no-deps --no-build-isolation -v . \
  -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90 -C cmake.define.IGDBEAM_CUDA=ON; then
  echo "build failed: see $OUT/build.log" | tee -a "$summary"
  exit 1
fi
python3 -c "import igdbeam; assert igdbeam.cuda_available(), 'no CUDA kernels or no GPU'" \
  >>"$OUT/build.log" 2>&1 || { echo "igdbeam.cuda_available() is False" | tee -a "$summary"; exit 1; }

# The installed package (with _C) is imported: python/ is not on sys.path. --maxfail rather than
# -x, so one run reports every failing op, not only the first.
step tests 110 python3 -m pytest -m cuda -q -rfE --maxfail=25 -p no:cacheprovider \
  --rootdir="$PWD" -c "$PWD/pyproject.toml" "$PWD/tests" --junitxml="$OUT/tests.xml"
step ratios 50 python3 benchmarks/bench_cuda.py --json "$OUT/bench_ratios.json"
step slices 60 python3 -m benchmarks.bench_select_slices
if [ "${GPU_CHECK_FULL:-0}" = 1 ]; then  # the slower extras: diagnostics, pytest-benchmark rounds
  step diag 60 bash tools/gpu_diag.sh
  step bench 70 python3 -m pytest -q -W default -p no:cacheprovider -c "$PWD/pyproject.toml" \
    "$PWD/benchmarks/bench_cuda.py" --benchmark-json="$OUT/bench.json" --benchmark-columns=min,median,max
fi
IGDBEAM_BENCH_JSON="$OUT/e2e.json" step e2e 140 python3 -m pytest -q -p no:cacheprovider \
  -c "$PWD/pyproject.toml" "$PWD/benchmarks/bench_cuda_e2e.py" --benchmark-json="$OUT/e2e_bench.json" \
  --benchmark-columns=min,median,max
cat "$summary"
