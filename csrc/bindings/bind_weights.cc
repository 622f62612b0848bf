// Binding of the label token weights (kernels.h LabelWeights, cuda_kernels.h cuda::LabelWeights).
#include "common.h"

namespace igdbeam::bindings {

void RegisterWeights(py::module_& m) {
  m.def(
      "label_weights",
      [](const TrieView& trie, std::uintptr_t labels, int64_t rows, int64_t cols,
         int64_t row_stride, int64_t ignore_index, float beta, int policy,
         std::uintptr_t out_info_gain, std::uintptr_t out_zero_ig, std::uintptr_t out_weight,
         std::uintptr_t out_row_status, int device, std::uintptr_t stream) {
        const LabelWeightsOutput out{Ptr<float>(out_info_gain), Ptr<uint8_t>(out_zero_ig),
                                     Ptr<float>(out_weight), Ptr<int32_t>(out_row_status)};
        const auto off_trie = static_cast<OffTriePolicy>(policy);
        return RunOp(
            "label_weights", device, stream,
            [&] {
              CheckTrie(trie);
              IGD_CHECK_ARG(policy >= 0 && policy <= 2,
                            "policy must be 0 (error), 1 (uniform) or 2 (ignore), got ", policy);
              IGD_CHECK_ARG(rows >= 0 && cols >= 0 && row_stride >= 0, "bad shape: rows=", rows,
                            " cols=", cols, " row_stride=", row_stride);
            },
            [&] {
              LabelWeights(trie, Ptr<const int64_t>(labels), rows, cols, row_stride, ignore_index,
                           beta, off_trie, out);
            },
            [&](auto cuda_stream) {
              return cuda::LabelWeights(trie, Ptr<const int64_t>(labels), rows, cols, row_stride,
                                        ignore_index, beta, off_trie, out, cuda_stream);
            });
      },
      py::arg("trie"), py::arg("labels"), py::arg("rows"), py::arg("cols"), py::arg("row_stride"),
      py::arg("ignore_index"), py::arg("beta"), py::arg("policy"), py::arg("out_info_gain"),
      py::arg("out_zero_ig"), py::arg("out_weight"), py::arg("out_row_status"), py::arg("device"),
      py::arg("stream"),
      "Per-token IG, zero-IG flags and weights of int64 label rows (kernels.h LabelWeights). "
      "Returns None or (code, message).");
}

}  // namespace igdbeam::bindings
