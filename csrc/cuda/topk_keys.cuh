// 64-bit sort keys for the candidate top-k: ascending key order is score descending, then the
// candidate's ordinal ascending (ordinal = position in the (beam, token) order of a batch row).
#pragma once

#include <cstdint>

#include "cuda_compat.cuh"

namespace igdbeam::cuda {

constexpr unsigned long long kPadKey = ~0ull;

__device__ __forceinline__ unsigned long long MakeKey(float score, uint32_t ordinal) {
  if (score != score) score = __uint_as_float(0x7fc00000u);  // one NaN, ranked first (as topk)
  if (score == 0.0f) score = 0.0f;                           // -0 ties with +0
  const uint32_t u = __float_as_uint(score);
  const uint32_t ascending = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<unsigned long long>(~ascending) << 32) | ordinal;
}

__device__ __forceinline__ float KeyScore(unsigned long long key) {
  const uint32_t ascending = ~static_cast<uint32_t>(key >> 32);
  const uint32_t u = (ascending & 0x80000000u) ? (ascending & 0x7fffffffu) : ~ascending;
  return __uint_as_float(u);
}

__device__ __forceinline__ uint32_t KeyOrdinal(unsigned long long key) {
  return static_cast<uint32_t>(key);
}

// Ascending bitonic sort of keys[0, n) in shared memory, n a power of two; all threads call it.
__device__ __forceinline__ void BitonicSort(unsigned long long* keys, unsigned n) {
  for (unsigned size = 2; size <= n; size <<= 1) {
    for (unsigned stride = size >> 1; stride > 0; stride >>= 1) {
      for (unsigned t = threadIdx.x; t < (n >> 1); t += blockDim.x) {
        const unsigned i = 2 * t - (t & (stride - 1));
        const unsigned j = i + stride;
        const unsigned long long a = keys[i];
        const unsigned long long b = keys[j];
        if ((a > b) == ((i & size) == 0)) {
          keys[i] = b;
          keys[j] = a;
        }
      }
      __syncthreads();
    }
  }
}

__host__ __device__ __forceinline__ unsigned NextPow2(unsigned x) {
  unsigned p = 1;
  while (p < x) p <<= 1;
  return p;
}

}  // namespace igdbeam::cuda
