// The hot ops, CUDA backend: the same semantics as the CPU kernels in kernels.h.
//
// Every pointer (trie arrays included) is a device pointer on the current device. `stream` is a
// cudaStream_t; every function only enqueues work on it and never synchronises the host, so a
// decoding step can be captured in a CUDA graph.
//
// No exception ever leaves (or is thrown inside) the nvcc-compiled code: every function is
// noexcept and returns a Status. The arguments both backends share are checked once, before
// either runs, by the bindings (decode_checks.h: shapes, prompt length, eos id, item filters;
// the temperature and alpha are checked in Python); the functions here check only the CUDA
// backend's own limits (beams, num_candidates, sizes that must fit 32 bits), giving
// kInvalidArgument. A failing CUDA call or launch gives kCudaError with the CUDA error string and
// the file:line of the call. The bindings (host-compiled, csrc/bindings/common.h RunOp) return a
// Status to Python unchanged, as None or the tuple (code, message), exactly like the CPU path's
// caught exceptions; igdbeam.native.dispatch raises the typed Python error.
#pragma once

#include <cstdint>

#include "igdbeam/kernels.h"
#include "igdbeam/trie.h"

namespace igdbeam::cuda {

// The outcome of a host wrapper. Plain data (a fixed, NUL-terminated, possibly truncated message
// instead of a std::string), so that it crosses between nvcc- and host-compiled objects safely.
struct Status {
  static constexpr int kOk = 0;
  static constexpr int kInvalidArgument = 1;
  static constexpr int kCudaError = 2;
  static constexpr int kMessageSize = 1024;

  int code;
  char message[kMessageSize];

  bool ok() const noexcept { return code == kOk; }
};

// One thread per row; lengths (may be null) are clamped to [0, cols].
Status WalkPaths(const TrieView& trie, const int64_t* tokens, int64_t rows, int64_t cols,
                 int64_t row_stride, const int64_t* lengths, int32_t* out_nodes,
                 void* stream) noexcept;

// One warp per row: the warp loads 32 labels at a time, walks them in order and stores the
// outputs of the 32 positions with coalesced writes.
Status LabelWeights(const TrieView& trie, const int64_t* labels, int64_t rows, int64_t cols,
                    int64_t row_stride, int64_t ignore_index, float beta, OffTriePolicy policy,
                    const LabelWeightsOutput& out, void* stream) noexcept;

// One block per row: walk, optional full-row log-softmax normaliser (temperature != 1), optional
// logsumexp over the children (renormalize), then a tiled rewrite of the row in place.
Status ProcessorStep(const TrieView& trie, const int64_t* input_ids, int64_t rows, int64_t seq_len,
                     int64_t ids_row_stride, int64_t prompt_len, void* scores, ScalarType dtype,
                     int64_t vocab, int64_t scores_row_stride, const DecodeParams& params,
                     int32_t* out_nodes, int32_t* row_status, void* stream) noexcept;

// A split-row pass for the log-softmax normaliser of every active beam (skipped with
// renormalize, where it cancels), then blocks that score every child of every active beam and
// keep the best num_candidates with a threshold-filtered, chunked bitonic top-k: one block per
// batch row, or S per row and a merge when trie.max_fanout allows many candidates per row.
// select_slices: 0 chooses S from the candidate bound, the batch and the device (no
// synchronisation); a positive value forces S (a test hook: every S gives the same, bit-identical
// result). candidate_bound: the caller's upper bound on any batch row's candidates (e.g. the
// root's fan-out on the first decoding step, beams * the largest fan-out below the root after);
// 0 means beams * trie.max_fanout. It only picks S: any bound gives the same result.
Status BeamStep(const TrieView& trie, const void* logits, ScalarType dtype, int64_t batch,
                int64_t beams, int64_t vocab, int64_t logits_row_stride, const float* beam_scores,
                const int32_t* nodes, const DecodeParams& params, int64_t num_candidates,
                const BeamStepOutput& out, void* stream, int64_t select_slices = 0,
                int64_t candidate_bound = 0) noexcept;

}  // namespace igdbeam::cuda
