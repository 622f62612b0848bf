// The igdbeam._C extension module: the only place that defines the module itself.
//
// The ops (walk_paths, label_weights, processor_step, beam_step, build_node_filters) never
// throw: each returns None or (code, message) from common.h RunOp. Only the trie build and the
// TrieView constructor throw; InvalidArgument reaches Python as ValueError.
#include <pybind11/pybind11.h>

#include "common.h"
#include "igdbeam/errors.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "igdbeam native kernels (CPU, and CUDA when built with it)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const igdbeam::InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  m.def(
      "has_cuda", []() { return igdbeam::bindings::kBuiltWithCuda; },
      "True when the CUDA kernels were compiled in.");
  igdbeam::bindings::RegisterTrie(m);
  igdbeam::bindings::RegisterWalk(m);
  igdbeam::bindings::RegisterWeights(m);
  igdbeam::bindings::RegisterDecode(m);
  igdbeam::bindings::RegisterFilters(m);
}
