// Bindings of the decode ops: the logits-processor step and the fused beam step, each with its
// optional item filter (item_filters.h NodeFilter; 0 pointers = no filter).
#include "common.h"

namespace igdbeam::bindings {

namespace {

// The checks and parameters both decode ops share: the trie, the dtype code, the temperature,
// the item filter.
struct DecodeCall {
  ScalarType dtype = ScalarType::kFloat32;
  DecodeParams params;
};

DecodeCall CheckDecodeCall(const TrieView& trie, int dtype_code, float alpha, float temperature,
                           bool renormalize, int64_t eos_token_id, std::uintptr_t node_mask,
                           std::uintptr_t node_score, float score_weight,
                           std::uintptr_t filter_rows, int64_t filter_row_stride) {
  CheckTrie(trie);
  const NodeFilter filter =
      MakeFilter(trie, node_mask, node_score, score_weight, filter_rows, filter_row_stride);
  return {DtypeFromCode(dtype_code),
          DecodeParams{alpha, temperature, renormalize, eos_token_id, filter}};
}

py::object ProcessorStepOp(const TrieView& trie, std::uintptr_t input_ids, int64_t rows,
                           int64_t seq_len, int64_t ids_row_stride, int64_t prompt_len,
                           std::uintptr_t scores, int dtype_code, int64_t vocab,
                           int64_t scores_row_stride, float alpha, float temperature,
                           bool renormalize, int64_t eos_token_id, std::uintptr_t out_nodes,
                           std::uintptr_t out_row_status, std::uintptr_t node_mask,
                           std::uintptr_t node_score, float score_weight,
                           std::uintptr_t filter_rows, int64_t filter_row_stride, int device,
                           std::uintptr_t stream) {
  DecodeCall call;
  return RunOp(
      "processor_step", device, stream,
      [&] {
        CheckProcessorShape(rows, seq_len, vocab, ids_row_stride, scores_row_stride, prompt_len);
        IGD_CHECK_ARG(eos_token_id < vocab, "eos_token_id ", eos_token_id,
                      " is outside the vocabulary of ", vocab, " tokens");
        call = CheckDecodeCall(trie, dtype_code, alpha, temperature, renormalize, eos_token_id,
                               node_mask, node_score, score_weight, filter_rows, filter_row_stride);
      },
      [&] {
        ProcessorStep(trie, Ptr<const int64_t>(input_ids), rows, seq_len, ids_row_stride,
                      prompt_len, Ptr<void>(scores), call.dtype, vocab, scores_row_stride,
                      call.params, Ptr<int32_t>(out_nodes), Ptr<int32_t>(out_row_status));
      },
      [&](auto cuda_stream) {
        return cuda::ProcessorStep(trie, Ptr<const int64_t>(input_ids), rows, seq_len,
                                   ids_row_stride, prompt_len, Ptr<void>(scores), call.dtype, vocab,
                                   scores_row_stride, call.params, Ptr<int32_t>(out_nodes),
                                   Ptr<int32_t>(out_row_status), cuda_stream);
      });
}

py::object BeamStepOp(const TrieView& trie, std::uintptr_t logits, int dtype_code, int64_t batch,
                      int64_t beams, int64_t vocab, int64_t logits_row_stride,
                      std::uintptr_t beam_scores, std::uintptr_t nodes, float alpha,
                      float temperature, bool renormalize, int64_t num_candidates,
                      std::uintptr_t out_score, std::uintptr_t out_logp, std::uintptr_t out_beam,
                      std::uintptr_t out_token, std::uintptr_t out_node, std::uintptr_t node_mask,
                      std::uintptr_t node_score, float score_weight, std::uintptr_t filter_rows,
                      int64_t filter_row_stride, int64_t select_slices, int64_t candidate_bound,
                      int device, std::uintptr_t stream) {
  const BeamStepOutput out{Ptr<float>(out_score), Ptr<float>(out_logp), Ptr<int32_t>(out_beam),
                           Ptr<int64_t>(out_token), Ptr<int32_t>(out_node)};
  DecodeCall call;
  return RunOp(
      "beam_step", device, stream,
      [&] {
        CheckBeamShape(batch, beams, vocab, logits_row_stride, num_candidates);
        IGD_CHECK_ARG(select_slices >= 0, "select_slices must be >= 0 (0: automatic), got ",
                      select_slices);
        IGD_CHECK_ARG(candidate_bound >= 0, "candidate_bound must be >= 0 (0: from the trie), got ",
                      candidate_bound);
        call = CheckDecodeCall(trie, dtype_code, alpha, temperature, renormalize, -1, node_mask,
                               node_score, score_weight, filter_rows, filter_row_stride);
      },
      [&] {
        BeamStep(trie, Ptr<const void>(logits), call.dtype, batch, beams, vocab, logits_row_stride,
                 Ptr<const float>(beam_scores), Ptr<const int32_t>(nodes), call.params,
                 num_candidates, out);
      },
      [&](auto cuda_stream) {
        return cuda::BeamStep(trie, Ptr<const void>(logits), call.dtype, batch, beams, vocab,
                              logits_row_stride, Ptr<const float>(beam_scores),
                              Ptr<const int32_t>(nodes), call.params, num_candidates, out,
                              cuda_stream, select_slices, candidate_bound);
      });
}

}  // namespace

void RegisterDecode(py::module_& m) {
  m.def("processor_step", &ProcessorStepOp, py::arg("trie"), py::arg("input_ids"), py::arg("rows"),
        py::arg("seq_len"), py::arg("ids_row_stride"), py::arg("prompt_len"), py::arg("scores"),
        py::arg("dtype_code"), py::arg("vocab"), py::arg("scores_row_stride"), py::arg("alpha"),
        py::arg("temperature"), py::arg("renormalize"), py::arg("eos_token_id"),
        py::arg("out_nodes"), py::arg("out_row_status"), py::arg("node_mask"),
        py::arg("node_score"), py::arg("score_weight"), py::arg("filter_rows"),
        py::arg("filter_row_stride"), py::arg("device"), py::arg("stream"),
        "Constrain and IG-reweight the scores of every row in place (kernels.h ProcessorStep), "
        "with an optional item filter (0 pointers: none). Returns None or (code, message).");

  m.def("beam_step", &BeamStepOp, py::arg("trie"), py::arg("logits"), py::arg("dtype_code"),
        py::arg("batch"), py::arg("beams"), py::arg("vocab"), py::arg("logits_row_stride"),
        py::arg("beam_scores"), py::arg("nodes"), py::arg("alpha"), py::arg("temperature"),
        py::arg("renormalize"), py::arg("num_candidates"), py::arg("out_score"),
        py::arg("out_logp"), py::arg("out_beam"), py::arg("out_token"), py::arg("out_node"),
        py::arg("node_mask"), py::arg("node_score"), py::arg("score_weight"),
        py::arg("filter_rows"), py::arg("filter_row_stride"), py::arg("select_slices"),
        py::arg("candidate_bound"), py::arg("device"), py::arg("stream"),
        "Fused beam step (kernels.h BeamStep): score every trie child of every active beam and "
        "keep the best num_candidates per batch row, with an optional item filter (0 pointers: "
        "none). select_slices and candidate_bound only steer the CUDA launch (0: automatic). "
        "Returns None or (code, message).");
}

}  // namespace igdbeam::bindings
