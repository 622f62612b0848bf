// Beam step, kernel 2: one block per batch row scores every child of every active beam and keeps
// the best num_candidates (K).
//
// Candidates are numbered in (beam, token) order: ordinal i of the row's N candidates lies in beam
// k with prefix[k] <= i < prefix[k + 1]. The block walks them one chunk (kSelectThreads *
// kSelectItems candidates) at a time; a candidate enters a shared-memory buffer only when its key
// beats the current K-th best key (the threshold), so after the first chunks almost nothing is
// written. When the buffer cannot
// take another chunk, the K best plus the buffer are bitonic-sorted and the threshold tightens.
// This bounds shared memory by K, not by the fan-out: a root with 150k children works the same.
#pragma once

#include <cstdint>

#include "cuda_compat.cuh"
#include "igdbeam/kernels.h"
#include "igdbeam/trie.h"
#include "logits_load.cuh"
#include "reduce.cuh"
#include "topk_keys.cuh"
#include "trie_device.cuh"

namespace igdbeam::cuda {

constexpr int kSelectThreads = 512;
constexpr int kSelectItems = 4;  // candidates per thread per chunk

struct SelectArgs {
  int64_t beams, vocab, row_stride;
  const float* beam_scores;
  const int32_t* nodes;
  const float2* partial;  // [rows, splits] normaliser partials, null with renormalize
  int splits;
  float inv_temperature, alpha;
  bool renormalize;
  int num_candidates;  // K
  int capacity;        // keys in the shared buffer: power of two >= K + one chunk
};

// Shared memory of one block: keys[capacity] then per-beam arrays.
inline size_t SelectSharedBytes(int capacity, int64_t beams) {
  return static_cast<size_t>(capacity) * 8 + static_cast<size_t>(beams) * 16 + 4;
}

struct Candidate {
  float score, logp;
  int beam;
  int32_t child;
};

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

template <typename T>
__global__ void __launch_bounds__(kSelectThreads)
    BeamSelectKernel(TrieView trie, const T* __restrict__ logits, SelectArgs a,
                     BeamStepOutput out) {
  IGD_DYNAMIC_SHARED(unsigned char, smem);
  const int beams = static_cast<int>(a.beams);
  const int K = a.num_candidates;
  unsigned long long* keys = reinterpret_cast<unsigned long long*>(smem);
  int32_t* b_lo = reinterpret_cast<int32_t*>(keys + a.capacity);
  uint32_t* b_prefix = reinterpret_cast<uint32_t*>(b_lo + beams);  // beams + 1 entries
  float* b_shift = reinterpret_cast<float*>(b_prefix + beams + 1);
  float* b_score = b_shift + beams;
  __shared__ int s_fill;
  __shared__ unsigned long long s_threshold;

  const int64_t b = blockIdx.x;
  const int tid = threadIdx.x;
  for (int k = tid; k < beams; k += blockDim.x) {
    const int64_t r = b * a.beams + k;
    const ChildRange kids = ChildrenInVocab(trie, a.nodes[r], a.vocab);
    b_lo[k] = kids.lo;
    b_prefix[k + 1] = static_cast<uint32_t>(kids.size());
    b_score[k] = a.beam_scores[r];
    float shift = 0.0f;
    if (!a.renormalize && kids.size() > 0) {
      MaxSum acc;
      for (int s = 0; s < a.splits; ++s) {
        const float2 p = a.partial[r * a.splits + s];
        acc.Merge(p.x, p.y);
      }
      shift = acc.Lse();
    }
    b_shift[k] = shift;
  }
  for (int t = tid; t < K; t += blockDim.x) keys[t] = kPadKey;
  if (tid == 0) {
    b_prefix[0] = 0;
    s_fill = 0;
    s_threshold = kPadKey;
  }
  __syncthreads();
  if (tid == 0) {
    for (int k = 0; k < beams; ++k) b_prefix[k + 1] += b_prefix[k];
  }
  __syncthreads();

  // Renormalize: logsumexp over each beam's children, one warp per beam.
  if (a.renormalize) {
    const int lane = tid & 31;
    for (int k = tid >> 5; k < beams; k += blockDim.x >> 5) {
      const T* row = logits + (b * a.beams + k) * a.row_stride;
      const int32_t lo = b_lo[k];
      const int32_t n = static_cast<int32_t>(b_prefix[k + 1] - b_prefix[k]);
      MaxSum acc;
      for (int32_t j = lane; j < n; j += 32)
        acc.Add(LoadFloat(row + __ldg(trie.token + lo + j)) * a.inv_temperature);
      acc = WarpReduce(acc);
      if (lane == 0) b_shift[k] = acc.Lse();
    }
    __syncthreads();
  }

  const uint32_t total = b_prefix[beams];
  auto candidate = [&](uint32_t i) {
    Candidate c;
    c.beam = BeamOfOrdinal(b_prefix, beams, i);
    c.child = b_lo[c.beam] + static_cast<int32_t>(i - b_prefix[c.beam]);
    const T* row = logits + (b * a.beams + c.beam) * a.row_stride;
    c.logp = LoadFloat(row + __ldg(trie.token + c.child)) * a.inv_temperature - b_shift[c.beam];
    const float w = 1.0f - a.alpha * __ldg(trie.info_gain_norm + c.child);
    c.score = b_score[c.beam] + w * c.logp;
    return c;
  };
  // Sorts the K best and the buffered keys; the first K become the new best.
  auto merge = [&](int fill) {
    const unsigned n = static_cast<unsigned>(K + fill);
    const unsigned n2 = NextPow2(n);
    for (unsigned t = n + tid; t < n2; t += blockDim.x) keys[t] = kPadKey;
    __syncthreads();
    BitonicSort(keys, n2);
    if (tid == 0) {
      s_threshold = keys[K - 1];
      s_fill = 0;
    }
    __syncthreads();
  };

  // Each thread scores kSelectItems candidates per chunk (their loads overlap), then appends those
  // that beat the threshold. All threads read the fill count between two barriers, so they all
  // take the same branch before anyone appends to the next chunk.
  const uint32_t chunk = blockDim.x * kSelectItems;
  int fill = 0;
  for (uint64_t base = 0; base < total; base += chunk) {
    unsigned long long key[kSelectItems];
#pragma unroll
    for (int u = 0; u < kSelectItems; ++u) {
      const uint64_t i = base + u * blockDim.x + tid;
      key[u] = i < total
                   ? MakeKey(candidate(static_cast<uint32_t>(i)).score, static_cast<uint32_t>(i))
                   : kPadKey;
    }
    const unsigned long long threshold = s_threshold;
#pragma unroll
    for (int u = 0; u < kSelectItems; ++u)
      if (key[u] < threshold) keys[K + atomicAdd(&s_fill, 1)] = key[u];
    __syncthreads();
    fill = s_fill;
    __syncthreads();
    if (fill > a.capacity - K - static_cast<int>(chunk)) {
      merge(fill);
      fill = 0;
    }
  }
  if (fill > 0) merge(fill);

  for (int t = tid; t < K; t += blockDim.x) {
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
    const Candidate c = candidate(KeyOrdinal(key));
    out.score[o] = KeyScore(key);
    out.logp[o] = c.logp;
    out.beam[o] = c.beam;
    out.token[o] = __ldg(trie.token + c.child);
    out.node[o] = c.child;
  }
}

}  // namespace igdbeam::cuda
