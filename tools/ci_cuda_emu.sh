#!/usr/bin/env bash
# CI step: run the CUDA kernels' tests on the CPU emulation (tools/cuda_emu_check.sh) whenever the
# kernels may have changed, so that a change that breaks indexing or barriers cannot land unseen
# while no GPU runs the tests. The emulation takes ~20 min on one core (132 tests, compile
# included), so by default it runs only when its inputs changed:
#
#   IGDBEAM_CUDA_EMU=auto    (default) run unless the fingerprint of the inputs (csrc/ and the
#                            emulation's own tools) equals the one of a passing run: the local
#                            record or the committed tools/cuda_emu.passed (a developer who ran
#                            the emulation with IGDBEAM_CUDA_EMU_RECORD=1 commits it with the
#                            sources); with neither file, run when those paths differ from
#                            $IGDBEAM_CI_BASE (default HEAD~1) or have uncommitted changes.
#   IGDBEAM_CUDA_EMU=always  run.
#   IGDBEAM_CUDA_EMU=never   skip (say why in the CI log).
#
# The record lives in $IGDBEAM_CI_CACHE (default ~/.cache/igdbeam-ci), written only after a pass;
# a CI without a persistent cache simply falls back to the git comparison. Extra arguments go to
# cuda_emu_check.sh (pytest arguments). Prints the decision and the elapsed time; exits with the
# emulation's status.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${IGDBEAM_CUDA_EMU:-auto}
cache=${IGDBEAM_CI_CACHE:-$HOME/.cache/igdbeam-ci}
record="$cache/cuda_emu.fingerprint"
# The fingerprint of the last full pass, committed with the sources it passed on
# (tools/ci_cuda_emu.sh --record writes it after a pass): a clean CI clone skips the emulation
# only when csrc/ and the emulation tools are exactly what passed.
committed=tools/cuda_emu.passed
inputs=(csrc tools/cuda_emu_check.sh tools/cuda_emu_plugin.py tools/ci_cuda_emu.sh)

fingerprint() {
  # sha256 of every input file's path and content, in a stable order.
  find "${inputs[@]}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum |
    cut -d' ' -f1
}

changed_since_base() {
  local base=${IGDBEAM_CI_BASE:-HEAD~1}
  if ! git rev-parse --verify -q "$base^{commit}" >/dev/null; then
    echo "no base commit $base"
    return 0
  fi
  if ! git diff --quiet "$base" -- "${inputs[@]}"; then
    echo "inputs differ from $base"
    return 0
  fi
  if [ -n "$(git status --porcelain -- "${inputs[@]}")" ]; then
    echo "inputs have uncommitted changes"
    return 0
  fi
  return 1
}

now=$(fingerprint)
case "$mode" in
  always) reason="IGDBEAM_CUDA_EMU=always" ;;
  never)
    echo "ci_cuda_emu: skipped (IGDBEAM_CUDA_EMU=never)"
    exit 0
    ;;
  auto)
    for known in "$record" "$committed"; do
      if [ -f "$known" ] && [ "$(cat "$known")" = "$now" ]; then
        echo "ci_cuda_emu: skipped: csrc/ and the emulation are unchanged since the last pass" \
          "(fingerprint $now in $known)"
        exit 0
      fi
    done
    if [ -f "$committed" ]; then
      reason="fingerprint differs from the last recorded pass ($committed)"
    elif reason=$(changed_since_base); then
      :
    else
      echo "ci_cuda_emu: skipped: no record in $record and csrc/ and the emulation are" \
        "unchanged since ${IGDBEAM_CI_BASE:-HEAD~1}"
      exit 0
    fi
    ;;
  *)
    echo "ci_cuda_emu: IGDBEAM_CUDA_EMU must be auto, always or never, got '$mode'" >&2
    exit 2
    ;;
esac

echo "ci_cuda_emu: running tools/cuda_emu_check.sh ($reason)"
start=$(date +%s)
status=0
tools/cuda_emu_check.sh "$@" || status=$?
elapsed=$(($(date +%s) - start))
printf 'ci_cuda_emu: exit %d after %dm%02ds\n' "$status" $((elapsed / 60)) $((elapsed % 60))
if [ "$status" -eq 0 ] && [ $# -eq 0 ]; then  # only a full run counts as a pass
  mkdir -p "$cache" && echo "$now" >"$record"
  if [ -n "${IGDBEAM_CUDA_EMU_RECORD:-}" ]; then echo "$now" >"$committed"; fi
fi
exit "$status"
