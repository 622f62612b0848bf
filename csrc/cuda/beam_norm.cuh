// Beam step, kernel 1: the log-softmax normaliser of every active beam's logits row.
//
// Grid (rows, splits): each block streams one contiguous slice of a row with 16-byte loads
// (kUnroll vectors in flight per thread, evict-first), keeps an online (max, sum exp) pair and
// writes it to partial[row * splits + split]. Inactive beams (node < 0 or a leaf) read nothing.
#pragma once

#include "cuda_compat.cuh"
#include "igdbeam/trie.h"
#include "logits_load.cuh"
#include "reduce.cuh"
#include "trie_device.cuh"

namespace igdbeam::cuda {

constexpr int kNormThreads = 256;
constexpr int kNormUnroll = 4;

template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    BeamNormKernel(TrieView trie, const T* __restrict__ logits, int64_t vocab, int64_t row_stride,
                   const int32_t* __restrict__ nodes, float inv_temperature, bool aligned,
                   float2* __restrict__ partial) {
  constexpr int V = Vec<T>::kSize;
  __shared__ float red[64];
  const int64_t r = blockIdx.x;
  const int split = blockIdx.y;
  const int splits = gridDim.y;
  const int32_t node = nodes[r];
  if (ChildrenInVocab(trie, node, vocab).size() == 0) {
    if (threadIdx.x == 0) partial[r * splits + split] = make_float2(-INFINITY, 0.0f);
    return;
  }
  const T* row = logits + r * row_stride;
  MaxSum acc;
  if (aligned) {
    const int64_t nvec = vocab / V;
    const int64_t v0 = nvec * split / splits;
    const int64_t v1 = nvec * (split + 1) / splits;
    for (int64_t v = v0 + threadIdx.x; v < v1; v += kNormThreads * kNormUnroll) {
      float x[kNormUnroll][V];
#pragma unroll
      for (int u = 0; u < kNormUnroll; ++u) {
        const int64_t vv = v + static_cast<int64_t>(u) * kNormThreads;
        if (vv < v1) {
          LoadVec<T, true>(row + vv * V, x[u]);
        } else {
#pragma unroll
          for (int i = 0; i < V; ++i) x[u][i] = -INFINITY;
        }
      }
#pragma unroll
      for (int u = 0; u < kNormUnroll; ++u) {
#pragma unroll
        for (int i = 0; i < V; ++i) x[u][i] *= inv_temperature;
        acc.AddN(x[u]);
      }
    }
    if (split == splits - 1) {
      for (int64_t e = nvec * V + threadIdx.x; e < vocab; e += kNormThreads)
        acc.Add(LoadFloat(row + e) * inv_temperature);
    }
  } else {
    const int64_t e0 = vocab * split / splits;
    const int64_t e1 = vocab * (split + 1) / splits;
    for (int64_t e = e0 + threadIdx.x; e < e1; e += kNormThreads)
      acc.Add(LoadFloat(row + e) * inv_temperature);
  }
  const MaxSum total = BlockReduce(acc, red);
  if (threadIdx.x == 0) partial[r * splits + split] = make_float2(total.m, total.s);
}

}  // namespace igdbeam::cuda
