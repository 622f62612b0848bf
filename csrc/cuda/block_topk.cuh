// Block-wide exact top-K of a stream of 64-bit keys (topk_keys.cuh: ascending = best first), the
// selection step shared by every beam select kernel (beam_select.cuh, beam_merge.cuh).
//
// The block walks the n keys one chunk (kSelectThreads * kSelectItems keys) at a time; a key
// enters a shared-memory buffer only when it beats the current K-th best key (the threshold), so
// after the first chunks almost nothing is written. When the buffer cannot take another chunk,
// the K best plus the buffer are bitonic-sorted and the threshold tightens. Shared memory is
// bounded by K, not by n.
#pragma once

#include <cstdint>

#include "cuda_compat.cuh"
#include "topk_keys.cuh"

namespace igdbeam::cuda {

constexpr int kSelectThreads = 512;
constexpr int kSelectItems = 4;  // keys per thread per chunk
constexpr uint32_t kSelectChunk = static_cast<uint32_t>(kSelectThreads) * kSelectItems;

// Keys in the shared buffer of a K-best selection: a power of two >= K + one chunk.
inline int SelectCapacity(int num_candidates) {
  return static_cast<int>(NextPow2(static_cast<unsigned>(num_candidates) + kSelectChunk));
}

// The block's top-K state in shared memory: keys[capacity], the buffer fill and the threshold.
struct TopKShared {
  unsigned long long* keys;
  int capacity;
  int* fill;
  unsigned long long* threshold;
};

// Leaves keys[0, K) holding the K smallest of key_of(0), ..., key_of(n - 1) in ascending order,
// padded with kPadKey (key_of may return kPadKey, which is never kept). Called by all threads of
// a kSelectThreads block; ends with a barrier.
template <typename KeyOf>
__device__ __forceinline__ void BlockTopK(const TopKShared& sh, int K, uint32_t n, KeyOf key_of) {
  unsigned long long* keys = sh.keys;
  const int tid = threadIdx.x;
  for (int t = tid; t < K; t += blockDim.x) keys[t] = kPadKey;
  if (tid == 0) {
    *sh.fill = 0;
    *sh.threshold = kPadKey;
  }
  __syncthreads();

  // Sorts the K best and the buffered keys; the first K become the new best.
  auto merge = [&](int fill) {
    const unsigned m = static_cast<unsigned>(K + fill);
    const unsigned m2 = NextPow2(m);
    for (unsigned t = m + tid; t < m2; t += blockDim.x) keys[t] = kPadKey;
    __syncthreads();
    BitonicSort(keys, m2);
    if (tid == 0) {
      *sh.threshold = keys[K - 1];
      *sh.fill = 0;
    }
    __syncthreads();
  };

  // Each thread computes kSelectItems keys per chunk (their loads overlap), then appends those
  // that beat the threshold. All threads read the fill count between two barriers, so they all
  // take the same branch before anyone appends to the next chunk.
  const uint32_t chunk = blockDim.x * kSelectItems;
  int fill = 0;
  for (uint64_t base = 0; base < n; base += chunk) {
    unsigned long long key[kSelectItems];
#pragma unroll
    for (int u = 0; u < kSelectItems; ++u) {
      const uint64_t i = base + u * blockDim.x + tid;
      key[u] = i < n ? key_of(static_cast<uint32_t>(i)) : kPadKey;
    }
    const unsigned long long threshold = *sh.threshold;
#pragma unroll
    for (int u = 0; u < kSelectItems; ++u)
      if (key[u] < threshold) keys[K + atomicAdd(sh.fill, 1)] = key[u];
    __syncthreads();
    fill = *sh.fill;
    __syncthreads();
    if (fill > sh.capacity - K - static_cast<int>(chunk)) {
      merge(fill);
      fill = 0;
    }
  }
  if (fill > 0) merge(fill);
}

}  // namespace igdbeam::cuda
