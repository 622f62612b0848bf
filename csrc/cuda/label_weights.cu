// CUDA label token weights (spec section 3): one warp per row.
//
// The warp loads 32 labels at a time (coalesced), walks that chunk's completion tokens in order
// (the lanes search each node's children together, WarpFindChild), keeps the result of
// position p in lane p and stores the chunk's outputs with coalesced writes. A row that leaves
// the trie is swept a second time, as the CPU kernel does: its IG and zero-IG flags are cleared
// (those of the prefix walked before leaving included) and its completion tokens get the off-trie
// weight.
#include <cassert>

#include "cuda_check.cuh"
#include "igdbeam/cuda_kernels.h"
#include "igdbeam/trie_lookup.h"
#include "trie_device.cuh"

namespace igdbeam::cuda {

namespace {

constexpr int kWarpsPerBlock = 4;

__global__ void LabelWeightsKernel(TrieView trie, const int64_t* __restrict__ labels, int64_t rows,
                                   int64_t cols, int64_t row_stride, int64_t ignore_index,
                                   float beta, int32_t policy, LabelWeightsOutput out) {
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (r >= rows) return;  // uniform per warp
  const int64_t* row = labels + r * row_stride;
  float* ig_row = out.info_gain + r * cols;
  uint8_t* zero_row = out.zero_ig + r * cols;
  float* w_row = out.weight + r * cols;
  int32_t node = 0;
  bool left = false;
  for (int64_t c0 = 0; c0 < cols; c0 += 32) {
    const int64_t p = c0 + lane;
    const int64_t label = p < cols ? row[p] : ignore_index;
    const bool completion = p < cols && label != ignore_index;
    unsigned pending = __ballot_sync(0xffffffffu, completion);
    float my_ig = 0.0f;
    uint8_t my_zero = 0;
    float my_w = 0.0f;
    while (pending) {
      const int src = __ffs(pending) - 1;
      pending &= pending - 1;
      const int64_t token = __shfl_sync(0xffffffffu, label, src);
      if (!left) {
        const int32_t child = WarpFindChild(trie, node, token);
        if (child < 0) {
          left = true;
        } else {
          node = child;
        }
      }
      if (lane == src && !left) {
        my_ig = trie.info_gain[node];
        my_zero = trie.zero_ig[node];
        my_w = my_zero ? beta : 1.0f;
      }
    }
    if (p < cols) {
      ig_row[p] = my_ig;
      zero_row[p] = my_zero;
      w_row[p] = my_w;
    }
  }
  if (lane == 0) out.row_status[r] = left ? kRowLeftTrie : kRowOk;
  if (!left) return;
  const float off_weight = policy == static_cast<int32_t>(OffTriePolicy::kUniform) ? beta : 0.0f;
  for (int64_t p = lane; p < cols; p += 32) {
    ig_row[p] = 0.0f;
    zero_row[p] = 0;
    w_row[p] = row[p] != ignore_index ? off_weight : 0.0f;
  }
}

}  // namespace

Status LabelWeights(const TrieView& trie, const int64_t* labels, int64_t rows, int64_t cols,
                    int64_t row_stride, int64_t ignore_index, float beta, OffTriePolicy policy,
                    const LabelWeightsOutput& out, void* stream) noexcept {
  // Checked once by the bindings; debug builds assert them.
  assert(rows >= 0 && cols >= 0);
  assert(policy == OffTriePolicy::kError || policy == OffTriePolicy::kUniform ||
         policy == OffTriePolicy::kIgnore);
  if (rows == 0) return OkStatus();
  IGD_LAUNCH(LabelWeightsKernel, static_cast<unsigned>(CeilDiv(rows, kWarpsPerBlock)),
             kWarpsPerBlock * 32, 0, AsStream(stream))(
      trie, labels, rows, cols, row_stride, ignore_index, beta, static_cast<int32_t>(policy), out);
  IGD_CUDA_CHECK_LAUNCH();
  return OkStatus();
}

}  // namespace igdbeam::cuda
