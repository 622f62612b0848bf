#!/usr/bin/env bash
# The full exactness grid of igdbeam.vllm against igdbeam.generate: 64 ML-100k rows (SmolLM2,
# float32) for each of alpha 0 / 0.2 x history exclusion on / off x 10 / 50 beams, then the
# AsyncLLM check, one pytest run per variant through tools/ci_vllm.sh (its venv).
#
#   tools/vllm_exact_grid.sh [OUT]   # default OUT: benchmarks/quality/vllm-exact-64
#
# Each variant writes OUT/<variant>.json (rows with the same top-10, rows explained by score
# ties, unexplained rows, the largest score difference, both sides' seconds) and its pytest log
# OUT/<variant>.log; a variant whose JSON exists is skipped, so a stopped grid resumes. The
# 10-beam variants come first. Pin it to cores with taskset and VLLM_CPU_OMP_THREADS_BIND if
# the machine runs other work. Exit status: 1 if any variant failed its assertions.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/quality/vllm-exact-64}
mkdir -p "$OUT"
export IGDBEAM_VLLM_ROWS=${IGDBEAM_VLLM_ROWS:-64} IGDBEAM_VLLM_FULL=1 IGDBEAM_VLLM_RECORD=$OUT
failed=0
run() {  # run NAME PYTEST-NODE
  if [ -f "$OUT/$1.json" ]; then
    echo "skip $1 (recorded)"
    return
  fi
  echo "$(date -u +%FT%TZ) start $1"
  if ! tools/ci_vllm.sh -s "$2" >"$OUT/$1.log" 2>&1; then
    failed=1
  fi
  echo "$(date -u +%FT%TZ) end $1: $(tail -n 1 "$OUT/$1.log")"
}
for beams in 10 50; do
  for alpha in 0.2 0.0; do
    for exclude in True False; do
      run "LLM_alpha_${alpha}_exclude_${exclude}_beams_${beams}" \
        "tests/vllm/test_vllm_exact.py::test_offline_llm_matches_generate[${alpha}-${exclude}-${beams}]"
    done
  done
done
run "AsyncLLM_alpha_0.2_exclude_True_beams_10" \
  "tests/vllm/test_vllm_exact.py::test_async_engine_matches_generate"
exit "$failed"
