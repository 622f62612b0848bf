// The igdbeam._C extension module: the only place that defines the module itself.
#include <pybind11/pybind11.h>

#include "common.h"
#include "igdbeam/errors.h"

namespace py = pybind11;

namespace igdbeam::bindings {
void RegisterFilters(py::module_& m);  // bind_filters.cc: item filters and CF scores
}  // namespace igdbeam::bindings

PYBIND11_MODULE(_C, m) {
  m.doc() = "igdbeam native kernels (CPU, and CUDA when built with it)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const igdbeam::InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  igdbeam::bindings::RegisterTrie(m);
  igdbeam::bindings::RegisterWeights(m);
  igdbeam::bindings::RegisterDecode(m);
  igdbeam::bindings::RegisterCuda(m);
  igdbeam::bindings::RegisterFilters(m);
}
