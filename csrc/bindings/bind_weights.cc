// Bindings of the weights ops.
#include "common.h"

namespace igdbeam::bindings {

void RegisterWeights(py::module_& m) { (void)m; }

}  // namespace igdbeam::bindings
