#!/usr/bin/env bash
# Runs the CUDA kernels' tests on the CPU through the emulation in csrc/cuda/emu/ (no GPU needed):
# builds build/emu/igdbeam (the Python package with a _C whose CUDA backend, device 1, runs the
# real kernel sources on std::threads), then runs the CUDA tests against it with torch's CUDA
# calls patched to stay on the CPU. A developer check of the kernels' indexing and barrier logic, not of speed
# or of the real compiler. Deselected: tests that need real device memory, CUDA graphs or torch's
# own CUDA dispatch (torch.library.opcheck on cuda tensors), and tests
# of the public API's device behaviour (results on the CUDA device, deferred NaN checks), which
# cannot hold while the emulation keeps every tensor on the CPU; the public ops then take the C++
# path, so those tests exercise no CUDA kernel here anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/emu
mkdir -p "$out"
rm -rf "$out/igdbeam" && cp -r python/igdbeam "$out/igdbeam" && rm -f "$out"/igdbeam/_C*.so
g++ -std=c++17 -O2 -fPIC -shared -Wall -Wno-unknown-pragmas -DIGDBEAM_WITH_CUDA=1 -DIGDBEAM_CUDA_EMU \
  -I csrc/include -I csrc/cuda $(python3 -m pybind11 --includes) \
  -x c++ csrc/cuda/*.cu -x none csrc/cuda/emu/emu_state.cc csrc/cpu/*.cc csrc/bindings/*.cc \
  -o "$out/igdbeam/_C$(python3-config --extension-suffix)" -lpthread
PYTHONPATH="$out:tests:tools" timeout "${EMU_TIMEOUT:-1800}" python3 -m pytest -p cuda_emu_plugin \
  -m cuda -q -x -p no:cacheprovider "$@" \
  --deselect "tests/test_beam_step_kernel.py::test_beam_step_strided_logits_and_graph_capture[cuda]" \
  --deselect tests/test_beam_step_selection.py::test_beam_step_sliced_graph_capture \
  --deselect tests/test_walk.py \
  --deselect tests/test_decode_cuda.py::test_processor_step_cuda_nan_validation \
  --deselect tests/test_kv_cache.py::test_cuda_shared_prefix_equals_dynamic \
  --deselect "tests/test_label_weights.py::test_worked_example_exact[cuda]" \
  --deselect tests/test_label_weights_kernel.py::test_cuda_matches_cpu \
  --deselect tests/test_torch_ops.py::test_opcheck \
  -k "not test_node_arrays_match_brute_force"
