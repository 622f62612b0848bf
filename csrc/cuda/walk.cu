// CUDA walk of token rows through the trie: one thread per row.
#include <cassert>

#include "cuda_check.cuh"
#include "igdbeam/cuda_kernels.h"
#include "igdbeam/trie_lookup.h"

namespace igdbeam::cuda {

namespace {

__global__ void WalkPathsKernel(TrieView trie, const int64_t* __restrict__ tokens, int64_t rows,
                                int64_t cols, int64_t row_stride,
                                const int64_t* __restrict__ lengths, int32_t* __restrict__ out) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  int64_t len = lengths ? lengths[r] : cols;
  len = len < 0 ? 0 : (len > cols ? cols : len);
  const int64_t* row = tokens + r * row_stride;
  int32_t node = 0;
  for (int64_t i = 0; i < len && node >= 0; ++i) node = FindChild(trie, node, row[i]);
  out[r] = node;
}

}  // namespace

Status WalkPaths(const TrieView& trie, const int64_t* tokens, int64_t rows, int64_t cols,
                 int64_t row_stride, const int64_t* lengths, int32_t* out_nodes,
                 void* stream) noexcept {
  assert(rows >= 0 && cols >= 0);  // checked once by the bindings
  if (rows == 0) return OkStatus();
  constexpr int kThreads = 128;
  IGD_LAUNCH(WalkPathsKernel, static_cast<unsigned>(CeilDiv(rows, kThreads)), kThreads, 0,
             AsStream(stream))(trie, tokens, rows, cols, row_stride, lengths, out_nodes);
  IGD_CUDA_CHECK_LAUNCH();
  return OkStatus();
}

}  // namespace igdbeam::cuda
