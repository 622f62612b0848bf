// Binding of the per-request item filters and CF scores (item_filters.h BuildNodeFilters,
// cuda_item_filters.h cuda::BuildNodeFilters).
#include "common.h"
#include "igdbeam/cuda_item_filters.h"  // declarations only; defined in CUDA builds
#include "igdbeam/item_filters.h"

namespace igdbeam::bindings {

namespace {

py::object BuildNodeFiltersOp(const TrieView& trie, std::uintptr_t leaf_nodes,
                              std::uintptr_t leaf_item_offsets, std::uintptr_t leaf_items,
                              int64_t num_leaves, int64_t num_items, int64_t rows,
                              std::uintptr_t item_mask, int64_t mask_row_stride,
                              std::uintptr_t item_scores, int64_t scores_row_stride,
                              std::uintptr_t out_node_mask, std::uintptr_t out_node_score,
                              int num_threads, int32_t max_depth, int device,
                              std::uintptr_t stream) {
  LeafView leaves;
  leaves.num_leaves = num_leaves;
  leaves.num_items = num_items;
  leaves.leaf_nodes = Ptr<const int32_t>(leaf_nodes);
  leaves.leaf_item_offsets = Ptr<const int32_t>(leaf_item_offsets);
  leaves.leaf_items = Ptr<const int32_t>(leaf_items);
  ItemInputs in;
  in.item_mask = OptionalPtr<const uint8_t>(item_mask);
  in.mask_row_stride = mask_row_stride;
  in.item_scores = OptionalPtr<const float>(item_scores);
  in.scores_row_stride = scores_row_stride;
  NodeFilterOutput out;
  out.node_mask = OptionalPtr<uint64_t>(out_node_mask);
  out.node_score = OptionalPtr<float>(out_node_score);
  return RunOp(
      "build_node_filters", device, stream,
      [&] {
        CheckTrie(trie);
        IGD_CHECK_ARG(rows >= 0, "rows must be >= 0, got ", rows);
        IGD_CHECK_ARG(num_leaves >= 0 && num_items >= 0, "bad leaf view: ", num_leaves, " leaves, ",
                      num_items, " items");
        IGD_CHECK_ARG(mask_row_stride >= 0 && scores_row_stride >= 0,
                      "row strides must be >= 0, got ", mask_row_stride, " and ",
                      scores_row_stride);
        IGD_CHECK_ARG(out.node_score == nullptr || in.item_scores != nullptr,
                      "node scores need item scores");
        IGD_CHECK_ARG(num_threads >= 1, "num_threads must be >= 1, got ", num_threads);
        IGD_CHECK_ARG(max_depth >= 0 && max_depth < 65536, "max_depth must lie in [0, 65536), got ",
                      max_depth);
      },
      [&] { BuildNodeFilters(trie, leaves, rows, in, out, num_threads); },
      [&](auto cuda_stream) {
        return cuda::BuildNodeFilters(trie, leaves, rows, max_depth, in, out, cuda_stream);
      });
}

}  // namespace

void RegisterFilters(py::module_& m) {
  m.def("build_node_filters", &BuildNodeFiltersOp, py::arg("trie"), py::arg("leaf_nodes"),
        py::arg("leaf_item_offsets"), py::arg("leaf_items"), py::arg("num_leaves"),
        py::arg("num_items"), py::arg("rows"), py::arg("item_mask"), py::arg("mask_row_stride"),
        py::arg("item_scores"), py::arg("scores_row_stride"), py::arg("out_node_mask"),
        py::arg("out_node_score"), py::arg("num_threads"), py::arg("max_depth"), py::arg("device"),
        py::arg("stream"),
        "Per-node item filter mask (bit-packed: uint64 [ceil(rows / 64), num_nodes], bit r % 64 "
        "for row r) and CF log-mass (float32 [rows, num_nodes]) from per-row item inputs (0 "
        "pointers: absent); item_filters.h. num_threads: CPU threads; max_depth: the trie's "
        "depth (CUDA). Returns None or (code, message).");
}

}  // namespace igdbeam::bindings
