#!/usr/bin/env bash
# CI: the training-engine tests that need an extra install. Installs DeepSpeed (pinned; pure
# Python, torch left as it is), then runs the DeepSpeed ZeRO-2 / ZeRO-3 parity tests: 2 CPU
# processes over gloo, launched with `accelerate launch` and the shipped configs in
# examples/configs/. DeepSpeed builds its shared-memory op with g++/ninja on the first launch
# (about 40 s, cached). The FSDP2 and DDP parity tests need nothing extra and run with the
# main test suite (tests/test_engines_fsdp.py, tests/test_distributed_training.py); pass
# --all to run them here too.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
torch_version=$(python3 -c "import torch; print(torch.__version__.split('+')[0])")
python3 -m pip install -q "deepspeed==0.19.8" "torch==${torch_version}"
# the DeepSpeed tests skip when deepspeed is missing: make sure it imports before running them
python3 -c "import deepspeed; assert deepspeed.__version__ == '0.19.8', deepspeed.__version__"
tests=(tests/test_engines_deepspeed.py)
if [ "${1:-}" = "--all" ]; then
  tests+=(tests/test_engines_fsdp.py tests/test_distributed_training.py)
fi
python3 -m pytest -q -p no:cacheprovider -rs "${tests[@]}"
