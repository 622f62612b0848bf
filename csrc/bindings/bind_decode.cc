// Bindings of the decode ops: the logits-processor step and the fused beam step (CPU).
#include "common.h"
#include "igdbeam/errors.h"
#include "igdbeam/kernels.h"

namespace igdbeam::bindings {

namespace {

ScalarType DtypeFromCode(int dtype_code) {
  IGD_CHECK_ARG(dtype_code >= 0 && dtype_code <= 2,
                "dtype_code must be 0 (float32), 1 (bfloat16) or 2 (float16), got ", dtype_code);
  return static_cast<ScalarType>(dtype_code);
}

}  // namespace

void RegisterDecode(py::module_& m) {
  m.def(
      "processor_step_cpu",
      [](const TrieView& trie, std::uintptr_t input_ids, int64_t rows, int64_t seq_len,
         int64_t ids_row_stride, int64_t prompt_len, std::uintptr_t scores, int dtype_code,
         int64_t vocab, int64_t scores_row_stride, float alpha, float temperature, bool renormalize,
         int64_t eos_token_id, std::uintptr_t out_nodes, std::uintptr_t out_row_status) {
        const ScalarType dtype = DtypeFromCode(dtype_code);
        DecodeParams params;
        params.alpha = alpha;
        params.temperature = temperature;
        params.renormalize = renormalize;
        params.eos_token_id = eos_token_id;
        py::gil_scoped_release release;
        ProcessorStep(trie, Ptr<const int64_t>(input_ids), rows, seq_len, ids_row_stride,
                      prompt_len, Ptr<void>(scores), dtype, vocab, scores_row_stride, params,
                      Ptr<int32_t>(out_nodes), Ptr<int32_t>(out_row_status));
      },
      py::arg("trie"), py::arg("input_ids"), py::arg("rows"), py::arg("seq_len"),
      py::arg("ids_row_stride"), py::arg("prompt_len"), py::arg("scores"), py::arg("dtype_code"),
      py::arg("vocab"), py::arg("scores_row_stride"), py::arg("alpha"), py::arg("temperature"),
      py::arg("renormalize"), py::arg("eos_token_id"), py::arg("out_nodes"),
      py::arg("out_row_status"),
      "Constrain and IG-reweight the scores of every beam in place (see kernels.h).");

  m.def(
      "beam_step_cpu",
      [](const TrieView& trie, std::uintptr_t logits, int dtype_code, int64_t batch, int64_t beams,
         int64_t vocab, int64_t logits_row_stride, std::uintptr_t beam_scores, std::uintptr_t nodes,
         float alpha, float temperature, bool renormalize, int64_t num_candidates,
         std::uintptr_t out_score, std::uintptr_t out_logp, std::uintptr_t out_beam,
         std::uintptr_t out_token, std::uintptr_t out_node) {
        const ScalarType dtype = DtypeFromCode(dtype_code);
        DecodeParams params;
        params.alpha = alpha;
        params.temperature = temperature;
        params.renormalize = renormalize;
        BeamStepOutput out{Ptr<float>(out_score), Ptr<float>(out_logp), Ptr<int32_t>(out_beam),
                           Ptr<int64_t>(out_token), Ptr<int32_t>(out_node)};
        py::gil_scoped_release release;
        BeamStep(trie, Ptr<const void>(logits), dtype, batch, beams, vocab, logits_row_stride,
                 Ptr<const float>(beam_scores), Ptr<const int32_t>(nodes), params, num_candidates,
                 out);
      },
      py::arg("trie"), py::arg("logits"), py::arg("dtype_code"), py::arg("batch"), py::arg("beams"),
      py::arg("vocab"), py::arg("logits_row_stride"), py::arg("beam_scores"), py::arg("nodes"),
      py::arg("alpha"), py::arg("temperature"), py::arg("renormalize"), py::arg("num_candidates"),
      py::arg("out_score"), py::arg("out_logp"), py::arg("out_beam"), py::arg("out_token"),
      py::arg("out_node"),
      "Fused beam step: score every trie child of every active beam, keep the best C per row.");
}

}  // namespace igdbeam::bindings
