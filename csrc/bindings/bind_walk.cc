// Binding of the trie walk (kernels.h WalkPaths, cuda_kernels.h cuda::WalkPaths).
#include "common.h"

namespace igdbeam::bindings {

void RegisterWalk(py::module_& m) {
  m.def(
      "walk_paths",
      [](const TrieView& trie, std::uintptr_t tokens, int64_t rows, int64_t cols,
         int64_t row_stride, std::uintptr_t lengths, std::uintptr_t out_nodes, int device,
         std::uintptr_t stream) {
        return RunOp(
            "walk_paths", device, stream,
            [&] {
              CheckTrie(trie);
              IGD_CHECK_ARG(rows >= 0 && cols >= 0 && row_stride >= 0, "bad shape: rows=", rows,
                            " cols=", cols, " row_stride=", row_stride);
            },
            [&] {
              WalkPaths(trie, Ptr<const int64_t>(tokens), rows, cols, row_stride,
                        OptionalPtr<const int64_t>(lengths), Ptr<int32_t>(out_nodes));
            },
            [&](auto cuda_stream) {
              return cuda::WalkPaths(trie, Ptr<const int64_t>(tokens), rows, cols, row_stride,
                                     OptionalPtr<const int64_t>(lengths), Ptr<int32_t>(out_nodes),
                                     cuda_stream);
            });
      },
      py::arg("trie"), py::arg("tokens"), py::arg("rows"), py::arg("cols"), py::arg("row_stride"),
      py::arg("lengths"), py::arg("out_nodes"), py::arg("device"), py::arg("stream"),
      "Walk int64 token rows from the root; writes the int32 node reached or -1. Returns None or "
      "(code, message).");
}

}  // namespace igdbeam::bindings
