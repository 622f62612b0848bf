// Beam step, the per-batch-row pieces every select kernel (beam_select.cuh, beam_merge.cuh)
// shares: the launch arguments, the row's beams in shared memory, candidate scoring and the
// output epilogue.
//
// Candidates are numbered in (beam, token) order: ordinal i of the row's N candidates lies in beam
// k with prefix[k] <= i < prefix[k + 1]. Every kernel rebuilds the same prefix from the nodes and
// the trie, so an ordinal (the low half of a top-k key) means the same candidate in all of them.
#pragma once

#include <cstdint>

#include "beam_child_norm.cuh"
#include "block_topk.cuh"
#include "cuda_compat.cuh"
#include "igdbeam/kernels.h"
#include "igdbeam/trie.h"
#include "logits_load.cuh"
#include "reduce.cuh"
#include "topk_keys.cuh"
#include "trie_device.cuh"

namespace igdbeam::cuda {

struct SelectArgs {
  int64_t beams, vocab, row_stride;
  const float* beam_scores;
  const int32_t* nodes;
  const float2* partial;  // [rows, splits] full-row normaliser partials, null with renormalize
  int splits;
  const float* child_lse;  // [rows] children normalisers (BeamChildNormKernel), or null
  float inv_temperature, alpha;
  bool renormalize;
  int num_candidates;              // K
  int capacity;                    // keys in the shared buffer (SelectCapacity)
  int slices;                      // S: select blocks per batch row
  unsigned long long* slice_keys;  // [batch, S, K] best keys of each slice; S > 1 only
  NodeFilter filter;               // per-request item filters / CF scores (item_filters.h)
};

// Shared memory of one select block: keys[capacity] then per-beam arrays.
inline size_t SelectSharedBytes(int capacity, int64_t beams) {
  return static_cast<size_t>(capacity) * 8 + static_cast<size_t>(beams) * 16 + 4;
}

// Candidates per slice when a row of `total` is split into `slices`: whole chunks, so that only
// the last non-empty slice has a partial one. total <= SliceLength(total, slices) means that the
// first slice holds the whole row.
__host__ __device__ __forceinline__ uint64_t SliceLength(uint64_t total, uint64_t slices) {
  const uint64_t per = (total + slices - 1) / slices;
  const uint64_t chunks = (per + kSelectChunk - 1) / kSelectChunk;
  return (chunks > 0 ? chunks : 1) * kSelectChunk;
}

// One batch row's beams in shared memory (after the keys): child range start, candidate ordinal
// prefix (beams + 1 entries), normaliser shift and running beam score.
struct RowBeams {
  int32_t* lo;
  uint32_t* prefix;
  float* shift;
  float* score;
};

__device__ __forceinline__ RowBeams CarveRowBeams(unsigned char* smem, int capacity, int beams) {
  RowBeams row;
  row.lo = reinterpret_cast<int32_t*>(reinterpret_cast<unsigned long long*>(smem) + capacity);
  row.prefix = reinterpret_cast<uint32_t*>(row.lo + beams);
  row.shift = reinterpret_cast<float*>(row.prefix + beams + 1);
  row.score = row.shift + beams;
  return row;
}

struct Candidate {
  float score, logp;
  int beam;
  int32_t child;
  bool allowed;  // false: the item filter removes the child (never a candidate)
};

// The item filter's CF scores of batch row b (item_filters.h): row filter.rows[b], or b.
__device__ __forceinline__ const float* FilterScores(const NodeFilter& f, int64_t b) {
  return f.node_score + f.row(b) * f.row_stride;
}

// The beam k whose candidate range holds ordinal i: the last k with prefix[k] <= i.
__device__ __forceinline__ int BeamOfOrdinal(const uint32_t* prefix, int beams, uint32_t i) {
  int lo = 0, hi = beams;  // answer in [0, beams)
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (prefix[mid] <= i) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Fills the child ranges, the ordinal prefix and the beam scores of batch row b; returns the
// row's candidate count. All threads call it; ends with a barrier.
__device__ __forceinline__ uint32_t LoadRowRanges(const TrieView& trie, const SelectArgs& a,
                                                  int64_t b, const RowBeams& row) {
  const int beams = static_cast<int>(a.beams);
  for (int k = threadIdx.x; k < beams; k += blockDim.x) {
    const int64_t r = b * a.beams + k;
    const ChildRange kids = ChildrenInVocab(trie, a.nodes[r], a.vocab);
    row.lo[k] = kids.lo;
    row.prefix[k + 1] = static_cast<uint32_t>(kids.size());
    row.score[k] = a.beam_scores[r];
  }
  if (threadIdx.x == 0) row.prefix[0] = 0;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int k = 0; k < beams; ++k) row.prefix[k + 1] += row.prefix[k];
  }
  __syncthreads();
  return row.prefix[beams];
}

// A select block's view of its batch row: the top-K buffer and the beams' arrays carved from the
// dynamic shared memory (SelectSharedBytes), and the row's candidate count.
struct SelectBlock {
  TopKShared top;
  RowBeams row;
  uint32_t total;
};

// Carves the block's shared memory for batch row b (the dynamic part sized by SelectSharedBytes,
// plus BlockTopK's two scalars, __shared__ here: one per block of whichever kernel calls it) and
// loads the row's ranges (LoadRowRanges). All threads call it; ends with a barrier.
__device__ __forceinline__ SelectBlock StartSelectBlock(const TrieView& trie, const SelectArgs& a,
                                                        int64_t b) {
  IGD_DYNAMIC_SHARED(unsigned char, smem);
  __shared__ int s_fill;
  __shared__ unsigned long long s_threshold;
  SelectBlock blk{{reinterpret_cast<unsigned long long*>(smem), a.capacity, &s_fill, &s_threshold},
                  CarveRowBeams(smem, a.capacity, static_cast<int>(a.beams)),
                  0};
  blk.total = LoadRowRanges(trie, a, b, blk.row);
  return blk;
}

// The shift of a beam's children's log-probabilities with renormalize: their logsumexp, or 0 when
// that is infinite (every child -inf), as the CPU kernel leaves such a beam's logits unchanged.
__device__ __forceinline__ float ChildShift(float child_lse) {
  return child_lse == INFINITY || child_lse == -INFINITY ? 0.0f : child_lse;
}

// Fills the normaliser shift of every beam of row b (after LoadRowRanges): the full-row
// log-softmax normaliser merged from kernel 1's partials, or with renormalize the children's
// logsumexp (precomputed in child_lse, else one warp per beam here). Ends with a barrier.
template <typename T>
__device__ __forceinline__ void LoadRowShifts(const TrieView& trie, const T* logits,
                                              const SelectArgs& a, int64_t b, const RowBeams& row) {
  const int beams = static_cast<int>(a.beams);
  if (a.renormalize && a.child_lse == nullptr) {
    for (int k = threadIdx.x >> 5; k < beams; k += blockDim.x >> 5) {
      const T* x = logits + (b * a.beams + k) * a.row_stride;
      const int32_t n = static_cast<int32_t>(row.prefix[k + 1] - row.prefix[k]);
      const float lse = WarpChildLse(trie, x, row.lo[k], n, a.inv_temperature,
                                     MaskRowOf(a.filter, a.filter.row(b)));
      if ((threadIdx.x & 31) == 0) row.shift[k] = ChildShift(lse);
    }
  } else {
    for (int k = threadIdx.x; k < beams; k += blockDim.x) {
      const int64_t r = b * a.beams + k;
      float shift = 0.0f;
      if (a.renormalize) {
        shift = ChildShift(a.child_lse[r]);
      } else if (row.prefix[k + 1] > row.prefix[k]) {
        MaxSum acc;
        for (int s = 0; s < a.splits; ++s) {
          const float2 p = a.partial[r * a.splits + s];
          acc.Merge(p.x, p.y);
        }
        shift = acc.Lse();
      }
      row.shift[k] = shift;
    }
  }
  __syncthreads();
}

// Candidate i (an ordinal of row b): its beam, trie child, log-probability and score.
template <typename T>
__device__ __forceinline__ Candidate ScoreCandidate(const TrieView& trie, const T* logits,
                                                    const SelectArgs& a, int64_t b,
                                                    const RowBeams& row, uint32_t i) {
  Candidate c;
  c.beam = BeamOfOrdinal(row.prefix, static_cast<int>(a.beams), i);
  c.child = row.lo[c.beam] + static_cast<int32_t>(i - row.prefix[c.beam]);
  const T* x = logits + (b * a.beams + c.beam) * a.row_stride;
  // _rn intrinsics: no FMA contraction, so every kernel that inlines this gets the same bits.
  const float scaled = __fmul_rn(LoadFloat(x + __ldg(trie.token + c.child)), a.inv_temperature);
  c.logp = __fsub_rn(scaled, row.shift[c.beam]);
  const float w = __fsub_rn(1.0f, __fmul_rn(a.alpha, __ldg(trie.info_gain_norm + c.child)));
  // An impossible token stays impossible when its weight is 0 (0 * -inf would be NaN).
  float step = c.logp == -INFINITY ? -INFINITY : __fmul_rn(w, c.logp);
  c.allowed = MaskRowOf(a.filter, a.filter.row(b)).allowed(c.child);
  if (a.filter.has_score()) {  // + weight * (CF log-mass of the child - of the beam's node)
    const float* cf = FilterScores(a.filter, b);
    const float child_cf = __ldg(cf + c.child);
    const float node_cf = __ldg(cf + __ldg(a.nodes + b * a.beams + c.beam));
    step = child_cf == -INFINITY
               ? -INFINITY
               : __fadd_rn(step, __fmul_rn(a.filter.score_weight, __fsub_rn(child_cf, node_cf)));
  }
  c.score = __fadd_rn(row.score[c.beam], step);
  return c;
}

// Writes row b's outputs from its K best keys (ascending); pad keys become -inf / -1.
template <typename T>
__device__ __forceinline__ void WriteRowOutputs(const TrieView& trie, const T* logits,
                                                const SelectArgs& a, int64_t b, const RowBeams& row,
                                                const unsigned long long* keys,
                                                const BeamStepOutput& out) {
  const int K = a.num_candidates;
  for (int t = threadIdx.x; t < K; t += blockDim.x) {
    const int64_t o = b * K + t;
    const unsigned long long key = keys[t];
    if (key == kPadKey) {
      out.score[o] = -INFINITY;
      out.logp[o] = -INFINITY;
      out.beam[o] = -1;
      out.token[o] = -1;
      out.node[o] = -1;
      continue;
    }
    const Candidate c = ScoreCandidate(trie, logits, a, b, row, KeyOrdinal(key));
    out.score[o] = KeyScore(key);
    out.logp[o] = c.logp;
    out.beam[o] = c.beam;
    out.token[o] = __ldg(trie.token + c.child);
    out.node[o] = c.child;
  }
}

}  // namespace igdbeam::cuda
