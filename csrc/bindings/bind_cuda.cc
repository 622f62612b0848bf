// Bindings of the CUDA kernels; without a CUDA build only has_cuda() is defined.
#include "common.h"

namespace igdbeam::bindings {

void RegisterCuda(py::module_& m) {
#if defined(IGDBEAM_WITH_CUDA)
  m.def("has_cuda", []() { return true; }, "True when the CUDA kernels were compiled in.");
#else
  m.def("has_cuda", []() { return false; }, "True when the CUDA kernels were compiled in.");
#endif
}

}  // namespace igdbeam::bindings
