#!/usr/bin/env bash
# Developer build: compiles the extension into build/dev and copies it next to the Python
# sources, so `PYTHONPATH=python pytest` works from any git worktree without reinstalling.
# Usage: tools/dev_build.sh [OFF|AUTO|ON]   (CUDA kernels; default OFF for speed)
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=${1:-OFF}
cmake -S . -B build/dev-$cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DIGDBEAM_CUDA="$cuda" \
  -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v python3)" >/dev/null
cmake --build build/dev-$cuda -j2
# Replace the module by rename, never in place: a process that has it mapped keeps its copy
# (overwriting a mapped shared library crashes that process with SIGBUS).
for so in build/dev-$cuda/_C*.so; do
  cp "$so" "python/igdbeam/.$(basename "$so").tmp" && mv -f "python/igdbeam/.$(basename "$so").tmp" "python/igdbeam/$(basename "$so")"
done
