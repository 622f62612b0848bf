// Beam step with renormalize: the logsumexp over each active beam's children (the normaliser that
// replaces the full-row one). One warp per beam, the same code wherever it runs: inside the
// single select block (beam_select.cuh), or, when the select is split over several blocks per
// batch row, once per beam in BeamChildNormKernel ahead of them, so no slice recomputes it and
// every path gets the same bits.
#pragma once

#include <cstdint>

#include "cuda_compat.cuh"
#include "igdbeam/trie.h"
#include "logits_load.cuh"
#include "reduce.cuh"
#include "trie_device.cuh"

namespace igdbeam::cuda {

constexpr int kChildNormThreads = 256;

// log(sum exp(row[token[c]] * inv_temperature)) over the children c in [lo, lo + n) (those with
// allowed.allowed(c) under an item filter's node mask row); every lane of the calling warp
// gets it (-inf when n == 0). All 32 lanes must call it.
template <typename T>
__device__ __forceinline__ float WarpChildLse(const TrieView& trie, const T* row, int32_t lo,
                                              int32_t n, float inv_temperature,
                                              NodeMaskRow allowed = NodeMaskRow()) {
  const int lane = threadIdx.x & 31;
  MaxSum acc;
  for (int32_t j = lane; j < n; j += 32)
    acc.Add(!allowed.allowed(lo + j)
                ? -INFINITY
                : __fmul_rn(LoadFloat(row + __ldg(trie.token + lo + j)), inv_temperature));
  return WarpReduce(acc).Lse();
}

// child_lse[r] for every row r in [0, rows): one warp per row.
template <typename T>
__global__ void __launch_bounds__(kChildNormThreads)
    BeamChildNormKernel(TrieView trie, const T* __restrict__ logits, int64_t rows, int64_t vocab,
                        int64_t row_stride, const int32_t* __restrict__ nodes,
                        float inv_temperature, float* __restrict__ child_lse,
                        NodeFilter filter = NodeFilter(), int64_t beams = 1) {
  const int64_t r =
      static_cast<int64_t>(blockIdx.x) * (kChildNormThreads / 32) + (threadIdx.x >> 5);
  if (r >= rows) return;  // the whole warp
  const ChildRange kids = ChildrenInVocab(trie, nodes[r], vocab);
  // An item filter's node mask row of the beam's batch row (item_filters.h), or none.
  const NodeMaskRow allowed = MaskRowOf(filter, filter.row(r / beams));
  const float lse =
      WarpChildLse(trie, logits + r * row_stride, kids.lo, kids.size(), inv_temperature, allowed);
  if ((threadIdx.x & 31) == 0) child_lse[r] = lse;
}

}  // namespace igdbeam::cuda
