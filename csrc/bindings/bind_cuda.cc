// Bindings of the CUDA kernels; without a CUDA build only has_cuda() is defined.
//
// Each <op>_cuda takes the TrieView (device pointers), the arguments of <op>_cpu (see README.md)
// and the cudaStream_t handle as an int. The GIL is released; nothing synchronises the device.
// The CUDA wrappers never throw (see cuda_kernels.h): their Status becomes an exception here, in
// host-compiled code, after the GIL is taken back.
#include "common.h"

#if defined(IGDBEAM_WITH_CUDA)
#include <stdexcept>

#include "igdbeam/cuda_kernels.h"
#include "igdbeam/errors.h"
#include "igdbeam/kernels.h"
#endif

namespace igdbeam::bindings {

namespace {

#if defined(IGDBEAM_WITH_CUDA)
void* Stream(std::uintptr_t stream) { return reinterpret_cast<void*>(stream); }

ScalarType DType(int code) { return static_cast<ScalarType>(code); }

// Runs `call` (returning a cuda::Status) without the GIL and returns None on success, else the
// tuple (code, message). No C++ exception is thrown on this path: on the GPU machines a throw
// from the CUDA bindings crashed the interpreter, so igdbeam.native.library raises the Python
// exception (ValueError for kInvalidArgument, RuntimeError otherwise) from the returned status.
template <typename Call>
py::object RunWithoutGil(Call&& call) {
  cuda::Status status;
  {
    py::gil_scoped_release release;
    status = call();
  }
  if (status.ok()) return py::none();
  return py::make_tuple(status.code, std::string(status.message));
}

void RegisterCudaOps(py::module_& m) {
  m.def(
      "walk_paths_cuda_status",
      [](const TrieView& trie, std::uintptr_t tokens, int64_t rows, int64_t cols,
         int64_t row_stride, std::uintptr_t lengths, std::uintptr_t out_nodes,
         std::uintptr_t stream) {
        return RunWithoutGil([&] {
          return cuda::WalkPaths(trie, Ptr<const int64_t>(tokens), rows, cols, row_stride,
                                 lengths ? Ptr<const int64_t>(lengths) : nullptr,
                                 Ptr<int32_t>(out_nodes), Stream(stream));
        });
      },
      py::arg("trie"), py::arg("tokens"), py::arg("rows"), py::arg("cols"), py::arg("row_stride"),
      py::arg("lengths"), py::arg("out_nodes"), py::arg("stream"),
      "CUDA walk of int64 token rows from the root; writes the int32 node reached or -1.");

  m.def(
      "label_weights_cuda_status",
      [](const TrieView& trie, std::uintptr_t labels, int64_t rows, int64_t cols,
         int64_t row_stride, int64_t ignore_index, float beta, int policy,
         std::uintptr_t out_info_gain, std::uintptr_t out_zero_ig, std::uintptr_t out_weight,
         std::uintptr_t out_row_status, std::uintptr_t stream) {
        LabelWeightsOutput out{Ptr<float>(out_info_gain), Ptr<uint8_t>(out_zero_ig),
                               Ptr<float>(out_weight), Ptr<int32_t>(out_row_status)};
        return RunWithoutGil([&] {
          return cuda::LabelWeights(trie, Ptr<const int64_t>(labels), rows, cols, row_stride,
                                    ignore_index, beta, static_cast<OffTriePolicy>(policy), out,
                                    Stream(stream));
        });
      },
      py::arg("trie"), py::arg("labels"), py::arg("rows"), py::arg("cols"), py::arg("row_stride"),
      py::arg("ignore_index"), py::arg("beta"), py::arg("policy"), py::arg("out_info_gain"),
      py::arg("out_zero_ig"), py::arg("out_weight"), py::arg("out_row_status"), py::arg("stream"),
      "CUDA label token weights: IG, zero-IG flag and loss weight of each completion token.");

  m.def(
      "processor_step_cuda_status",
      [](const TrieView& trie, std::uintptr_t input_ids, int64_t rows, int64_t seq_len,
         int64_t ids_row_stride, int64_t prompt_len, std::uintptr_t scores, int dtype_code,
         int64_t vocab, int64_t scores_row_stride, float alpha, float temperature, bool renormalize,
         int64_t eos_token_id, std::uintptr_t out_nodes, std::uintptr_t out_row_status,
         std::uintptr_t stream) {
        DecodeParams params;
        params.alpha = alpha;
        params.temperature = temperature;
        params.renormalize = renormalize;
        params.eos_token_id = eos_token_id;
        return RunWithoutGil([&] {
          return cuda::ProcessorStep(
              trie, Ptr<const int64_t>(input_ids), rows, seq_len, ids_row_stride, prompt_len,
              Ptr<void>(scores), DType(dtype_code), vocab, scores_row_stride, params,
              Ptr<int32_t>(out_nodes), Ptr<int32_t>(out_row_status), Stream(stream));
        });
      },
      py::arg("trie"), py::arg("input_ids"), py::arg("rows"), py::arg("seq_len"),
      py::arg("ids_row_stride"), py::arg("prompt_len"), py::arg("scores"), py::arg("dtype_code"),
      py::arg("vocab"), py::arg("scores_row_stride"), py::arg("alpha"), py::arg("temperature"),
      py::arg("renormalize"), py::arg("eos_token_id"), py::arg("out_nodes"),
      py::arg("out_row_status"), py::arg("stream"),
      "CUDA logits-processor step: rewrites each scores row in place (children reweighted, "
      "others -inf).");

  m.def(
      "beam_step_cuda_status",
      [](const TrieView& trie, std::uintptr_t logits, int dtype_code, int64_t batch, int64_t beams,
         int64_t vocab, int64_t logits_row_stride, std::uintptr_t beam_scores, std::uintptr_t nodes,
         float alpha, float temperature, bool renormalize, int64_t num_candidates,
         std::uintptr_t out_score, std::uintptr_t out_logp, std::uintptr_t out_beam,
         std::uintptr_t out_token, std::uintptr_t out_node, std::uintptr_t stream,
         int64_t select_slices, int64_t candidate_bound) {
        DecodeParams params;
        params.alpha = alpha;
        params.temperature = temperature;
        params.renormalize = renormalize;
        BeamStepOutput out{Ptr<float>(out_score), Ptr<float>(out_logp), Ptr<int32_t>(out_beam),
                           Ptr<int64_t>(out_token), Ptr<int32_t>(out_node)};
        return RunWithoutGil([&] {
          return cuda::BeamStep(trie, Ptr<const void>(logits), DType(dtype_code), batch, beams,
                                vocab, logits_row_stride, Ptr<const float>(beam_scores),
                                Ptr<const int32_t>(nodes), params, num_candidates, out,
                                Stream(stream), select_slices, candidate_bound);
        });
      },
      py::arg("trie"), py::arg("logits"), py::arg("dtype_code"), py::arg("batch"), py::arg("beams"),
      py::arg("vocab"), py::arg("logits_row_stride"), py::arg("beam_scores"), py::arg("nodes"),
      py::arg("alpha"), py::arg("temperature"), py::arg("renormalize"), py::arg("num_candidates"),
      py::arg("out_score"), py::arg("out_logp"), py::arg("out_beam"), py::arg("out_token"),
      py::arg("out_node"), py::arg("stream"), py::arg("select_slices") = 0,
      py::arg("candidate_bound") = 0,
      "CUDA fused beam step: log-softmax normaliser, children gather, IG reweighting and the "
      "per-batch-row top num_candidates. select_slices (internal, for tests): 0 lets the step "
      "choose how many blocks select each batch row's candidates; > 0 forces that many. "
      "candidate_bound: an upper bound on any batch row's candidates (0: beams * the trie's "
      "largest fan-out); it only picks the number of blocks.");
}
#endif

}  // namespace

void RegisterCuda(py::module_& m) {
#if defined(IGDBEAM_WITH_CUDA)
  m.def("has_cuda", []() { return true; }, "True when the CUDA kernels were compiled in.");
  RegisterCudaOps(m);
#else
  m.def("has_cuda", []() { return false; }, "True when the CUDA kernels were compiled in.");
#endif
}

}  // namespace igdbeam::bindings
