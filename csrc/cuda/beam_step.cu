// CUDA fused beam step: kernel 1 (beam_norm.cuh) streams each active beam's logits once for the
// log-softmax normaliser; kernel 2 gathers the children, reweights them and selects the top
// num_candidates per batch row, with one block per row (BeamSelectKernel, beam_select.cuh) or,
// when a row may hold many candidates, S blocks per row (BeamSliceKernel) and a merge
// (BeamMergeKernel, beam_merge.cuh). With renormalize the full-row normaliser cancels and kernel 1
// is skipped; the children's normaliser is computed in the select block, or ahead of a split
// select by BeamChildNormKernel. S is chosen on the host from static facts only (the trie's
// maximum fan-out, the batch, the SM count), so the step never synchronises and can be captured
// in a CUDA graph. Scratch comes from one cudaMallocAsync on the caller's stream.
#include <atomic>
#include <cassert>

#include "beam_child_norm.cuh"
#include "beam_merge.cuh"
#include "beam_norm.cuh"
#include "beam_select.cuh"
#include "cuda_check.cuh"
#include "cuda_compat.cuh"
#include "igdbeam/cuda_kernels.h"

namespace igdbeam::cuda {

namespace {

// Per-device facts read once: the multiprocessor count, and the device's current memory pool
// told to keep (rather than return to the OS at every synchronisation) a little freed memory, so
// the step's small cudaMallocAsync scratch is served from the pool. Only a pool whose release
// threshold is still the default 0 is touched.
Status MultiprocessorCount(int* out) noexcept {
  int device = 0;
  IGD_CUDA_CHECK(cudaGetDevice(&device));
  // Atomic: threads decoding at once may both fill an entry (the same value; setting the pool
  // threshold twice is harmless), but never read a torn one.
  static std::atomic<int> cached[64] = {};
  if (device < 0 || device >= 64) device = 0;
  int known = cached[device].load(std::memory_order_relaxed);
  if (known == 0) {
    int count = 0;
    IGD_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    cudaMemPool_t pool;
    if (cudaDeviceGetMemPool(&pool, device) == cudaSuccess) {
      uint64_t threshold = 0;
      if (cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold) ==
              cudaSuccess &&
          threshold == 0) {
        threshold = 64ull << 20;
        (void)cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
      }
    }
    (void)cudaGetLastError();  // a device without memory pools: cudaMallocAsync reports it
    known = count > 0 ? count : 1;
    cached[device].store(known, std::memory_order_relaxed);
  }
  *out = known;
  return OkStatus();
}

// Slices per row for kernel 1: enough blocks to fill the GPU about twice, slices of >= 8k tokens.
Status NormSplits(int64_t rows, int64_t vocab, int* out) noexcept {
  int sm_count = 1;
  IGD_RETURN_IF_ERROR(MultiprocessorCount(&sm_count));
  const int64_t target_blocks = static_cast<int64_t>(sm_count) * 16;
  int64_t splits = CeilDiv(target_blocks, rows);
  const int64_t max_splits = vocab / 8192 > 1 ? vocab / 8192 : 1;
  if (splits > max_splits) splits = max_splits;
  if (splits < 1) splits = 1;
  *out = static_cast<int>(splits);
  return OkStatus();
}

// Select slices per batch row. Only static facts: a row holds at most `bound` candidates (the
// caller's bound, else beams * max_fanout with max_fanout from the trie builder, clipped to the
// vocabulary; unknown counts as the vocabulary). A small bound keeps one block per row (no scratch,
// no merge launch); a large one gets enough slices to give the GPU about kSelectBlocksPerSm select
// blocks per SM, none shorter than kMinSliceCandidates, and few enough that the merge reads at most
// kMaxMergeKeys keys per row. At run time a row with few real candidates is finished by its first
// slice (beam_select.cuh). 2 select blocks per SM measured fastest on an H100 (all beams at a
// 20k-child root, batch 64: S = 4 took 316 us, S = 9 (4 per SM) 391 us, S = 1 559 us;
// bench_select_slices.py).
constexpr int kSelectBlocksPerSm = 2;
constexpr int64_t kMultiSliceMinCandidates = 4 * static_cast<int64_t>(kSelectChunk);
constexpr int64_t kMinSliceCandidates = 2 * static_cast<int64_t>(kSelectChunk);
constexpr int64_t kMaxSlices = 64;
constexpr int64_t kMaxMergeKeys = 16 * static_cast<int64_t>(kSelectChunk);

Status SelectSlices(const TrieView& trie, int64_t batch, int64_t beams, int64_t vocab,
                    int64_t num_candidates, int64_t candidate_bound, int* out) noexcept {
  const int64_t fanout = trie.max_fanout > 0 && trie.max_fanout < vocab
                             ? static_cast<int64_t>(trie.max_fanout)
                             : vocab;
  const int64_t bound = candidate_bound > 0 ? candidate_bound : beams * fanout;
  *out = 1;
  if (bound <= kMultiSliceMinCandidates) return OkStatus();
  int sm_count = 1;
  IGD_RETURN_IF_ERROR(MultiprocessorCount(&sm_count));
  int64_t slices = CeilDiv(static_cast<int64_t>(sm_count) * kSelectBlocksPerSm, batch);
  if (slices > bound / kMinSliceCandidates) slices = bound / kMinSliceCandidates;
  if (slices > kMaxMergeKeys / num_candidates) slices = kMaxMergeKeys / num_candidates;
  if (slices > kMaxSlices) slices = kMaxSlices;
  *out = slices > 1 ? static_cast<int>(slices) : 1;
  return OkStatus();
}

// The step's scratch, one allocation: kernel 1's partials, the children normalisers of a split
// renormalized select, and the slices' keys; each part starts on a 256-byte boundary.
struct StepScratch {
  void* base = nullptr;
  size_t bytes = 0;
  size_t partial_at = 0, child_lse_at = 0, slice_keys_at = 0;

  size_t Reserve(size_t n) {
    const size_t at = bytes;
    bytes += (n + 255) / 256 * 256;
    return at;
  }
  template <typename P>
  P* At(size_t offset, bool used) const {
    return used ? reinterpret_cast<P*>(static_cast<unsigned char*>(base) + offset) : nullptr;
  }
};

// Raises the dynamic shared memory limit of `kernel` when smem needs more than the default 48 KB.
template <typename Kernel>
Status AllowSharedBytes(Kernel kernel, size_t smem) noexcept {
  if (smem > 48 * 1024) {
    IGD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)));
  }
  return OkStatus();
}

// Enqueues kernel 1 (when partial, the same scratch as a.partial, is set), the children
// normalisers (when child_lse, the same as a.child_lse, is set) and the select: one kernel for
// S = 1, the slices and the merge otherwise.
Status LaunchBeamKernels(const TrieView& trie, const void* logits, ScalarType dtype, int64_t batch,
                         int64_t rows, float2* partial, float* child_lse, const SelectArgs& a,
                         size_t smem, const BeamStepOutput& out, cudaStream_t s) noexcept {
  const bool aligned = RowsAligned16(logits, a.row_stride, ElementSize(dtype));
  IGD_DISPATCH_FLOAT_TYPES(dtype, {
    const scalar_t* x = static_cast<const scalar_t*>(logits);
    if (partial != nullptr) {
      IGD_LAUNCH(BeamNormKernel<scalar_t>,
                 dim3(static_cast<unsigned>(rows), static_cast<unsigned>(a.splits)), kNormThreads,
                 0,
                 s)(trie, x, a.vocab, a.row_stride, a.nodes, a.inv_temperature, aligned, partial);
      IGD_CUDA_CHECK_LAUNCH();
    }
    if (child_lse != nullptr) {
      const int64_t warps = kChildNormThreads / 32;
      IGD_LAUNCH(BeamChildNormKernel<scalar_t>, static_cast<unsigned>(CeilDiv(rows, warps)),
                 kChildNormThreads, 0, s)(trie, x, rows, a.vocab, a.row_stride, a.nodes,
                                          a.inv_temperature, child_lse, a.filter, a.beams);
      IGD_CUDA_CHECK_LAUNCH();
    }
    if (a.slices == 1) {
      IGD_RETURN_IF_ERROR(AllowSharedBytes(BeamSelectKernel<scalar_t>, smem));
      IGD_LAUNCH(BeamSelectKernel<scalar_t>, static_cast<unsigned>(batch), kSelectThreads, smem, s)(
          trie, x, a, out);
      IGD_CUDA_CHECK_LAUNCH();
    } else {
      IGD_RETURN_IF_ERROR(AllowSharedBytes(BeamSliceKernel<scalar_t>, smem));
      IGD_RETURN_IF_ERROR(AllowSharedBytes(BeamMergeKernel<scalar_t>, smem));
      IGD_LAUNCH(BeamSliceKernel<scalar_t>,
                 dim3(static_cast<unsigned>(batch), static_cast<unsigned>(a.slices)),
                 kSelectThreads, smem, s)(trie, x, a, out);
      IGD_CUDA_CHECK_LAUNCH();
      IGD_LAUNCH(BeamMergeKernel<scalar_t>, static_cast<unsigned>(batch), kSelectThreads, smem, s)(
          trie, x, a, out);
      IGD_CUDA_CHECK_LAUNCH();
    }
  });
  return OkStatus();
}

}  // namespace

Status BeamStep(const TrieView& trie, const void* logits, ScalarType dtype, int64_t batch,
                int64_t beams, int64_t vocab, int64_t logits_row_stride, const float* beam_scores,
                const int32_t* nodes, const DecodeParams& params, int64_t num_candidates,
                const BeamStepOutput& out, void* stream, int64_t select_slices,
                int64_t candidate_bound) noexcept {
  // The shapes and the temperature were checked once (bindings, Python); debug builds assert
  // them. What follows are this backend's own limits.
  assert(batch >= 0 && beams >= 1 && num_candidates >= 1 && candidate_bound >= 0);
  assert(params.temperature > 0.0f);
  IGD_CUDA_CHECK_ARG(vocab >= 1, "the CUDA beam step needs vocab >= 1, got ", vocab);
  IGD_CUDA_CHECK_ARG(beams <= 1024, "the CUDA beam step supports at most 1024 beams, got ", beams);
  IGD_CUDA_CHECK_ARG(num_candidates <= 1024, "num_candidates must lie in [1, 1024] on CUDA, got ",
                     num_candidates);
  IGD_CUDA_CHECK_ARG(beams * vocab < 0xffffffffLL, "beams * vocab must stay below 2^32, got ",
                     beams, " * ", vocab);
  IGD_CUDA_CHECK_ARG(select_slices >= 0 && select_slices <= 1024,
                     "select_slices must lie in [0, 1024] (0: automatic), got ", select_slices);
  IGD_RETURN_IF_ERROR(CheckFloatType(dtype));
  if (batch == 0) return OkStatus();
  cudaStream_t s = AsStream(stream);
  const int64_t rows = batch * beams;

  SelectArgs a;
  a.beams = beams;
  a.vocab = vocab;
  a.row_stride = logits_row_stride;
  a.beam_scores = beam_scores;
  a.nodes = nodes;
  a.splits = 0;
  a.inv_temperature = 1.0f / params.temperature;
  a.alpha = params.alpha;
  a.renormalize = params.renormalize;
  a.filter = params.filter;
  a.num_candidates = static_cast<int>(num_candidates);
  a.capacity = SelectCapacity(a.num_candidates);
  a.slices = static_cast<int>(select_slices);
  if (a.slices == 0) {
    IGD_RETURN_IF_ERROR(
        SelectSlices(trie, batch, beams, vocab, num_candidates, candidate_bound, &a.slices));
  }
  const size_t smem = SelectSharedBytes(a.capacity, beams);

  const bool split = a.slices > 1;
  StepScratch scratch;
  if (!params.renormalize) {
    IGD_RETURN_IF_ERROR(NormSplits(rows, vocab, &a.splits));
    scratch.partial_at = scratch.Reserve(static_cast<size_t>(rows) * a.splits * sizeof(float2));
  }
  if (params.renormalize && split)
    scratch.child_lse_at = scratch.Reserve(static_cast<size_t>(rows) * sizeof(float));
  if (split) {
    scratch.slice_keys_at = scratch.Reserve(static_cast<size_t>(batch) * a.slices * num_candidates *
                                            sizeof(unsigned long long));
  }
  if (scratch.bytes > 0) IGD_CUDA_CHECK(cudaMallocAsync(&scratch.base, scratch.bytes, s));
  float2* partial = scratch.At<float2>(scratch.partial_at, !params.renormalize);
  float* child_lse = scratch.At<float>(scratch.child_lse_at, params.renormalize && split);
  a.partial = partial;
  a.child_lse = child_lse;
  a.slice_keys = scratch.At<unsigned long long>(scratch.slice_keys_at, split);

  const Status launched =
      LaunchBeamKernels(trie, logits, dtype, batch, rows, partial, child_lse, a, smem, out, s);
  if (scratch.base != nullptr) {
    const cudaError_t freed = cudaFreeAsync(scratch.base, s);
    if (!launched.ok()) return launched;  // the first error; the scratch is released regardless
    IGD_CUDA_CHECK(freed);
  }
  return launched;
}

}  // namespace igdbeam::cuda
