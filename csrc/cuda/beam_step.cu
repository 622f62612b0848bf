// CUDA fused beam step: kernel 1 (beam_norm.cuh) streams each active beam's logits once for the
// log-softmax normaliser; kernel 2 (beam_select.cuh) gathers the children, reweights them and
// selects the top num_candidates per batch row. With renormalize the full-row normaliser cancels
// and kernel 1 is skipped. Scratch comes from cudaMallocAsync on the caller's stream.
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
  static int cached[64] = {0};
  if (device < 0 || device >= 64) device = 0;
  if (cached[device] == 0) {
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
    cached[device] = count > 0 ? count : 1;
  }
  *out = cached[device];
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

// Enqueues kernel 1 (when partial, the same scratch as a.partial, is set) and kernel 2.
Status LaunchBeamKernels(const TrieView& trie, const void* logits, ScalarType dtype, int64_t batch,
                         int64_t rows, int64_t vocab, int64_t logits_row_stride,
                         const int32_t* nodes, float inv_t, float2* partial, const SelectArgs& a,
                         size_t smem, const BeamStepOutput& out, cudaStream_t s) noexcept {
  const bool aligned = RowsAligned16(logits, logits_row_stride, ElementSize(dtype));
  IGD_DISPATCH_FLOAT_TYPES(dtype, {
    const scalar_t* x = static_cast<const scalar_t*>(logits);
    if (partial != nullptr) {
      IGD_LAUNCH(BeamNormKernel<scalar_t>,
                 dim3(static_cast<unsigned>(rows), static_cast<unsigned>(a.splits)), kNormThreads,
                 0, s)(trie, x, vocab, logits_row_stride, nodes, inv_t, aligned, partial);
      IGD_CUDA_CHECK_LAUNCH();
    }
    if (smem > 48 * 1024) {
      IGD_CUDA_CHECK(cudaFuncSetAttribute(BeamSelectKernel<scalar_t>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(smem)));
    }
    IGD_LAUNCH(BeamSelectKernel<scalar_t>, static_cast<unsigned>(batch), kSelectThreads, smem, s)(
        trie, x, a, out);
    IGD_CUDA_CHECK_LAUNCH();
  });
  return OkStatus();
}

}  // namespace

Status BeamStep(const TrieView& trie, const void* logits, ScalarType dtype, int64_t batch,
                int64_t beams, int64_t vocab, int64_t logits_row_stride, const float* beam_scores,
                const int32_t* nodes, const DecodeParams& params, int64_t num_candidates,
                const BeamStepOutput& out, void* stream) noexcept {
  IGD_CUDA_CHECK_ARG(batch >= 0 && beams >= 1 && vocab >= 1, "bad shape: batch ", batch, ", beams ",
                     beams, ", vocab ", vocab);
  IGD_CUDA_CHECK_ARG(beams <= 1024, "the CUDA beam step supports at most 1024 beams, got ", beams);
  IGD_CUDA_CHECK_ARG(num_candidates >= 1 && num_candidates <= 1024,
                     "num_candidates must lie in [1, 1024] on CUDA, got ", num_candidates);
  IGD_CUDA_CHECK_ARG(beams * vocab < 0xffffffffLL, "beams * vocab must stay below 2^32, got ",
                     beams, " * ", vocab);
  IGD_CUDA_CHECK_ARG(params.temperature > 0.0f, "temperature must be positive, got ",
                     params.temperature);
  IGD_RETURN_IF_ERROR(CheckFloatType(dtype));
  if (batch == 0) return OkStatus();
  cudaStream_t s = AsStream(stream);
  const int64_t rows = batch * beams;
  const float inv_t = 1.0f / params.temperature;

  SelectArgs a;
  a.beams = beams;
  a.vocab = vocab;
  a.row_stride = logits_row_stride;
  a.beam_scores = beam_scores;
  a.nodes = nodes;
  a.partial = nullptr;
  a.splits = 0;
  a.inv_temperature = inv_t;
  a.alpha = params.alpha;
  a.renormalize = params.renormalize;
  a.num_candidates = static_cast<int>(num_candidates);
  a.capacity = static_cast<int>(
      NextPow2(static_cast<unsigned>(num_candidates) + kSelectThreads * kSelectItems));
  const size_t smem = SelectSharedBytes(a.capacity, beams);

  float2* partial = nullptr;
  if (!params.renormalize) {
    IGD_RETURN_IF_ERROR(NormSplits(rows, vocab, &a.splits));
    IGD_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&partial),
                                   static_cast<size_t>(rows) * a.splits * sizeof(float2), s));
    a.partial = partial;
  }
  const Status launched =
      LaunchBeamKernels(trie, logits, dtype, batch, rows, vocab, logits_row_stride, nodes, inv_t,
                        partial, a, smem, out, s);
  if (partial != nullptr) {
    const cudaError_t freed = cudaFreeAsync(partial, s);
    if (!launched.ok()) return launched;  // the first error; the scratch is released regardless
    IGD_CUDA_CHECK(freed);
  }
  return launched;
}

}  // namespace igdbeam::cuda
