// Bindings of the per-request item filters and CF scores (item_filters.h): the per-node array
// build, and the two decode steps with a NodeFilter (the unfiltered steps keep their own
// bindings in bind_decode.cc / bind_cuda.cc). Pointers and the contract as in README.md.
#include "common.h"
#include "igdbeam/errors.h"
#include "igdbeam/item_filters.h"
#include "igdbeam/kernels.h"

#if defined(IGDBEAM_WITH_CUDA)
#include "igdbeam/cuda_item_filters.h"
#include "igdbeam/cuda_kernels.h"
#endif

namespace igdbeam::bindings {

namespace {

ScalarType FilterDtype(int dtype_code) {
  IGD_CHECK_ARG(dtype_code >= 0 && dtype_code <= 2,
                "dtype_code must be 0 (float32), 1 (bfloat16) or 2 (float16), got ", dtype_code);
  return static_cast<ScalarType>(dtype_code);
}

LeafView MakeLeafView(std::uintptr_t leaf_nodes, std::uintptr_t leaf_item_offsets,
                      std::uintptr_t leaf_items, int64_t num_leaves, int64_t num_items) {
  LeafView v;
  v.num_leaves = num_leaves;
  v.num_items = num_items;
  v.leaf_nodes = Ptr<const int32_t>(leaf_nodes);
  v.leaf_item_offsets = Ptr<const int32_t>(leaf_item_offsets);
  v.leaf_items = Ptr<const int32_t>(leaf_items);
  return v;
}

ItemInputs MakeInputs(std::uintptr_t item_mask, int64_t mask_row_stride, std::uintptr_t item_scores,
                      int64_t scores_row_stride) {
  ItemInputs in;
  in.item_mask = item_mask ? Ptr<const uint8_t>(item_mask) : nullptr;
  in.mask_row_stride = mask_row_stride;
  in.item_scores = item_scores ? Ptr<const float>(item_scores) : nullptr;
  in.scores_row_stride = scores_row_stride;
  return in;
}

NodeFilter MakeFilter(std::uintptr_t node_mask, std::uintptr_t node_score, float score_weight,
                      std::uintptr_t rows, int64_t row_stride) {
  NodeFilter f;
  f.node_mask = node_mask ? Ptr<const uint64_t>(node_mask) : nullptr;
  f.node_score = node_score ? Ptr<const float>(node_score) : nullptr;
  f.score_weight = score_weight;
  f.rows = rows ? Ptr<const int32_t>(rows) : nullptr;
  f.row_stride = row_stride;
  return f;
}

DecodeParams MakeParams(float alpha, float temperature, bool renormalize, int64_t eos_token_id,
                        const NodeFilter& filter) {
  DecodeParams params;
  params.alpha = alpha;
  params.temperature = temperature;
  params.renormalize = renormalize;
  params.eos_token_id = eos_token_id;
  params.filter = filter;
  return params;
}

#if defined(IGDBEAM_WITH_CUDA)
// As in bind_cuda.cc: run without the GIL, return None or (code, message), never throw.
template <typename Call>
py::object RunCuda(Call&& call) {
  cuda::Status status;
  {
    py::gil_scoped_release release;
    status = call();
  }
  if (status.ok()) return py::none();
  return py::make_tuple(status.code, std::string(status.message));
}

void* AsStreamPtr(std::uintptr_t stream) { return reinterpret_cast<void*>(stream); }
#endif

}  // namespace

void RegisterFilters(py::module_& m) {
  m.def(
      "build_node_filters_cpu",
      [](const TrieView& trie, std::uintptr_t leaf_nodes, std::uintptr_t leaf_item_offsets,
         std::uintptr_t leaf_items, int64_t num_leaves, int64_t num_items, int64_t rows,
         std::uintptr_t item_mask, int64_t mask_row_stride, std::uintptr_t item_scores,
         int64_t scores_row_stride, std::uintptr_t out_node_mask, std::uintptr_t out_node_score,
         int num_threads) {
        const LeafView leaves =
            MakeLeafView(leaf_nodes, leaf_item_offsets, leaf_items, num_leaves, num_items);
        const ItemInputs in =
            MakeInputs(item_mask, mask_row_stride, item_scores, scores_row_stride);
        NodeFilterOutput out;
        out.node_mask = out_node_mask ? Ptr<uint64_t>(out_node_mask) : nullptr;
        out.node_score = out_node_score ? Ptr<float>(out_node_score) : nullptr;
        py::gil_scoped_release release;
        BuildNodeFilters(trie, leaves, rows, in, out, num_threads);
      },
      py::arg("trie"), py::arg("leaf_nodes"), py::arg("leaf_item_offsets"), py::arg("leaf_items"),
      py::arg("num_leaves"), py::arg("num_items"), py::arg("rows"), py::arg("item_mask"),
      py::arg("mask_row_stride"), py::arg("item_scores"), py::arg("scores_row_stride"),
      py::arg("out_node_mask"), py::arg("out_node_score"), py::arg("num_threads") = 1,
      "Per-node item filter mask (bit-packed: uint64 [ceil(rows / 64), num_nodes], bit r % 64 "
      "for row r) and CF log-mass (float32 [rows, num_nodes]) from per-row item inputs (0 "
      "pointers: absent); see item_filters.h.");

  m.def(
      "processor_step_filtered_cpu",
      [](const TrieView& trie, std::uintptr_t input_ids, int64_t rows, int64_t seq_len,
         int64_t ids_row_stride, int64_t prompt_len, std::uintptr_t scores, int dtype_code,
         int64_t vocab, int64_t scores_row_stride, float alpha, float temperature, bool renormalize,
         int64_t eos_token_id, std::uintptr_t out_nodes, std::uintptr_t out_row_status,
         std::uintptr_t node_mask, std::uintptr_t node_score, float score_weight,
         std::uintptr_t filter_rows, int64_t filter_row_stride) {
        const ScalarType dtype = FilterDtype(dtype_code);
        const DecodeParams params = MakeParams(
            alpha, temperature, renormalize, eos_token_id,
            MakeFilter(node_mask, node_score, score_weight, filter_rows, filter_row_stride));
        py::gil_scoped_release release;
        ProcessorStep(trie, Ptr<const int64_t>(input_ids), rows, seq_len, ids_row_stride,
                      prompt_len, Ptr<void>(scores), dtype, vocab, scores_row_stride, params,
                      Ptr<int32_t>(out_nodes), Ptr<int32_t>(out_row_status));
      },
      "processor_step_cpu followed by node_mask, node_score, score_weight, filter_rows, "
      "filter_row_stride (item_filters.h NodeFilter).");

  m.def(
      "beam_step_filtered_cpu",
      [](const TrieView& trie, std::uintptr_t logits, int dtype_code, int64_t batch, int64_t beams,
         int64_t vocab, int64_t logits_row_stride, std::uintptr_t beam_scores, std::uintptr_t nodes,
         float alpha, float temperature, bool renormalize, int64_t num_candidates,
         std::uintptr_t out_score, std::uintptr_t out_logp, std::uintptr_t out_beam,
         std::uintptr_t out_token, std::uintptr_t out_node, std::uintptr_t node_mask,
         std::uintptr_t node_score, float score_weight, std::uintptr_t filter_rows,
         int64_t filter_row_stride) {
        const ScalarType dtype = FilterDtype(dtype_code);
        const DecodeParams params = MakeParams(
            alpha, temperature, renormalize, -1,
            MakeFilter(node_mask, node_score, score_weight, filter_rows, filter_row_stride));
        BeamStepOutput out{Ptr<float>(out_score), Ptr<float>(out_logp), Ptr<int32_t>(out_beam),
                           Ptr<int64_t>(out_token), Ptr<int32_t>(out_node)};
        py::gil_scoped_release release;
        BeamStep(trie, Ptr<const void>(logits), dtype, batch, beams, vocab, logits_row_stride,
                 Ptr<const float>(beam_scores), Ptr<const int32_t>(nodes), params, num_candidates,
                 out);
      },
      "beam_step_cpu followed by node_mask, node_score, score_weight, filter_rows, "
      "filter_row_stride (item_filters.h NodeFilter).");

#if defined(IGDBEAM_WITH_CUDA)
  m.def(
      "build_node_filters_cuda_status",
      [](const TrieView& trie, std::uintptr_t leaf_nodes, std::uintptr_t leaf_item_offsets,
         std::uintptr_t leaf_items, int64_t num_leaves, int64_t num_items, int64_t rows,
         std::uintptr_t item_mask, int64_t mask_row_stride, std::uintptr_t item_scores,
         int64_t scores_row_stride, std::uintptr_t out_node_mask, std::uintptr_t out_node_score,
         int32_t max_depth, std::uintptr_t stream) {
        const LeafView leaves =
            MakeLeafView(leaf_nodes, leaf_item_offsets, leaf_items, num_leaves, num_items);
        const ItemInputs in =
            MakeInputs(item_mask, mask_row_stride, item_scores, scores_row_stride);
        NodeFilterOutput out;
        out.node_mask = out_node_mask ? Ptr<uint64_t>(out_node_mask) : nullptr;
        out.node_score = out_node_score ? Ptr<float>(out_node_score) : nullptr;
        return RunCuda([&] {
          return cuda::BuildNodeFilters(trie, leaves, rows, max_depth, in, out,
                                        AsStreamPtr(stream));
        });
      },
      "CUDA build_node_filters (device pointers) followed by max_depth and the stream.");

  m.def(
      "processor_step_filtered_cuda_status",
      [](const TrieView& trie, std::uintptr_t input_ids, int64_t rows, int64_t seq_len,
         int64_t ids_row_stride, int64_t prompt_len, std::uintptr_t scores, int dtype_code,
         int64_t vocab, int64_t scores_row_stride, float alpha, float temperature, bool renormalize,
         int64_t eos_token_id, std::uintptr_t out_nodes, std::uintptr_t out_row_status,
         std::uintptr_t node_mask, std::uintptr_t node_score, float score_weight,
         std::uintptr_t filter_rows, int64_t filter_row_stride, std::uintptr_t stream) {
        const DecodeParams params = MakeParams(
            alpha, temperature, renormalize, eos_token_id,
            MakeFilter(node_mask, node_score, score_weight, filter_rows, filter_row_stride));
        return RunCuda([&] {
          return cuda::ProcessorStep(
              trie, Ptr<const int64_t>(input_ids), rows, seq_len, ids_row_stride, prompt_len,
              Ptr<void>(scores), static_cast<ScalarType>(dtype_code), vocab, scores_row_stride,
              params, Ptr<int32_t>(out_nodes), Ptr<int32_t>(out_row_status), AsStreamPtr(stream));
        });
      },
      "processor_step_filtered_cpu's arguments followed by the stream.");

  m.def(
      "beam_step_filtered_cuda_status",
      [](const TrieView& trie, std::uintptr_t logits, int dtype_code, int64_t batch, int64_t beams,
         int64_t vocab, int64_t logits_row_stride, std::uintptr_t beam_scores, std::uintptr_t nodes,
         float alpha, float temperature, bool renormalize, int64_t num_candidates,
         std::uintptr_t out_score, std::uintptr_t out_logp, std::uintptr_t out_beam,
         std::uintptr_t out_token, std::uintptr_t out_node, std::uintptr_t node_mask,
         std::uintptr_t node_score, float score_weight, std::uintptr_t filter_rows,
         int64_t filter_row_stride, std::uintptr_t stream, int64_t select_slices,
         int64_t candidate_bound) {
        const DecodeParams params = MakeParams(
            alpha, temperature, renormalize, -1,
            MakeFilter(node_mask, node_score, score_weight, filter_rows, filter_row_stride));
        BeamStepOutput out{Ptr<float>(out_score), Ptr<float>(out_logp), Ptr<int32_t>(out_beam),
                           Ptr<int64_t>(out_token), Ptr<int32_t>(out_node)};
        return RunCuda([&] {
          return cuda::BeamStep(
              trie, Ptr<const void>(logits), static_cast<ScalarType>(dtype_code), batch, beams,
              vocab, logits_row_stride, Ptr<const float>(beam_scores), Ptr<const int32_t>(nodes),
              params, num_candidates, out, AsStreamPtr(stream), select_slices, candidate_bound);
        });
      },
      "beam_step_filtered_cpu's arguments followed by the stream, select_slices and "
      "candidate_bound (as beam_step_cuda_status).");
#endif
}

}  // namespace igdbeam::bindings
