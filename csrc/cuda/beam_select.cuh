// Beam step, kernel 2: scores every child of every active beam of a batch row and keeps the best
// num_candidates (K) with BlockTopK (block_topk.cuh), keys MakeKey(score, ordinal).
//
// BeamSelectKernel: one block per batch row does it all (S = 1, the usual mid-decode step).
//
// BeamSliceKernel: when a row may hold many candidates (beams at nodes with tens of thousands of
// children), one block per row cannot keep the GPU busy. The grid (batch, S) splits each row's
// ordinals into S slices of whole chunks (SliceLength); block (b, s) keeps the exact top-K of its
// slice in slice_keys[b, s, :] and BeamMergeKernel (beam_merge.cuh) selects the row's top-K of
// those S * K keys. The keys are the same as BeamSelectKernel's, so the result is bit-identical.
// A slice past the row's real candidates writes only pad keys. A row whose candidates fit in the
// first slice is finished by block (b, 0) exactly as BeamSelectKernel would, and the merge skips
// it, so small steps pay no more than an extra launch.
#pragma once

#include <cstdint>

#include "beam_row.cuh"
#include "block_topk.cuh"
#include "cuda_compat.cuh"
#include "igdbeam/kernels.h"
#include "igdbeam/trie.h"
#include "topk_keys.cuh"

namespace igdbeam::cuda {

// The top-K of ordinals [begin, end) of row b into blk.top.keys[0, K).
template <typename T>
__device__ __forceinline__ void SelectOrdinals(const TrieView& trie, const T* logits,
                                               const SelectArgs& a, int64_t b,
                                               const SelectBlock& blk, uint32_t begin,
                                               uint32_t end) {
  LoadRowShifts(trie, logits, a, b, blk.row);
  BlockTopK(blk.top, a.num_candidates, end - begin, [&](uint32_t j) {
    const uint32_t i = begin + j;
    const Candidate c = ScoreCandidate(trie, logits, a, b, blk.row, i);
    return c.allowed ? MakeKey(c.score, i) : kPadKey;  // a filtered child is no candidate
  });
}

template <typename T>
__global__ void __launch_bounds__(kSelectThreads)
    BeamSelectKernel(TrieView trie, const T* __restrict__ logits, SelectArgs a,
                     BeamStepOutput out) {
  const int64_t b = blockIdx.x;
  const SelectBlock blk = StartSelectBlock(trie, a, b);
  SelectOrdinals(trie, logits, a, b, blk, 0, blk.total);
  WriteRowOutputs(trie, logits, a, b, blk.row, blk.top.keys, out);
}

template <typename T>
__global__ void __launch_bounds__(kSelectThreads)
    BeamSliceKernel(TrieView trie, const T* __restrict__ logits, SelectArgs a, BeamStepOutput out) {
  const int64_t b = blockIdx.x;
  const SelectBlock blk = StartSelectBlock(trie, a, b);
  const int s = blockIdx.y;
  const int K = a.num_candidates;
  const uint32_t total = blk.total;
  const uint64_t len = SliceLength(total, a.slices);
  if (total <= len) {  // one slice holds the row: block 0 finishes it, the merge skips it
    if (s != 0) return;
    SelectOrdinals(trie, logits, a, b, blk, 0, total);
    WriteRowOutputs(trie, logits, a, b, blk.row, blk.top.keys, out);
    return;
  }
  unsigned long long* dst = a.slice_keys + (b * a.slices + s) * K;
  const uint64_t begin = len * s;
  if (begin >= total) {  // past the row's candidates
    for (int t = threadIdx.x; t < K; t += blockDim.x) dst[t] = kPadKey;
    return;
  }
  const uint64_t end = begin + len < total ? begin + len : total;
  SelectOrdinals(trie, logits, a, b, blk, static_cast<uint32_t>(begin), static_cast<uint32_t>(end));
  for (int t = threadIdx.x; t < K; t += blockDim.x) dst[t] = blk.top.keys[t];
}

}  // namespace igdbeam::cuda
