// Beam step, kernel 3 (only when the select is split over S > 1 slices per batch row, see
// beam_select.cuh): one block per batch row selects the row's top-K among the S * K keys the
// slices left in slice_keys[b, :, :] and writes the outputs as BeamSelectKernel does. The union of
// the slices' exact top-K holds the row's top-K, and the keys (score, then ordinal) are unique, so
// the outputs are bit-identical to a single block's. A row that BeamSliceKernel's first block
// already finished (all its candidates in one slice) is skipped.
#pragma once

#include <cstdint>

#include "beam_row.cuh"
#include "block_topk.cuh"
#include "cuda_compat.cuh"
#include "igdbeam/kernels.h"
#include "igdbeam/trie.h"

namespace igdbeam::cuda {

template <typename T>
__global__ void __launch_bounds__(kSelectThreads)
    BeamMergeKernel(TrieView trie, const T* __restrict__ logits, SelectArgs a, BeamStepOutput out) {
  const int64_t b = blockIdx.x;
  const SelectBlock blk = StartSelectBlock(trie, a, b);
  if (blk.total <= SliceLength(blk.total, a.slices)) return;  // written by BeamSliceKernel
  const int K = a.num_candidates;
  const unsigned long long* src = a.slice_keys + b * a.slices * K;
  LoadRowShifts(trie, logits, a, b, blk.row);
  BlockTopK(blk.top, K, static_cast<uint32_t>(a.slices * K), [&](uint32_t j) { return src[j]; });
  WriteRowOutputs(trie, logits, a, b, blk.row, blk.top.keys, out);
}

}  // namespace igdbeam::cuda
