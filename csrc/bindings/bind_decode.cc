// Bindings of the decode ops.
#include "common.h"

namespace igdbeam::bindings {

void RegisterDecode(py::module_& m) { (void)m; }

}  // namespace igdbeam::bindings
