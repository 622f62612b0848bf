// Warp and block reductions: the online (max, sum of exp) pair behind every logsumexp.
#pragma once

#include <cmath>

#include "cuda_compat.cuh"

namespace igdbeam::cuda {

constexpr float kLog2e = 1.4426950408889634f;

// Running logsumexp state: the max and the sum of exp(x - max). A NaN input makes the sum NaN.
// Sums and products use the _rn intrinsics: nvcc may not contract them into FMAs, so the same
// inputs give the same bits in every kernel that inlines this (the split and single-block select
// paths must agree bit for bit).
struct MaxSum {
  float m = -INFINITY;
  float s = 0.0f;

  // Adds N values with one rescale of the running sum.
  template <int N>
  __device__ __forceinline__ void AddN(const float (&x)[N]) {
    float vm = x[0];
#pragma unroll
    for (int i = 1; i < N; ++i) vm = fmaxf(vm, x[i]);
    if (vm > m) {
      s = __fmul_rn(s, exp2f(__fmul_rn(__fsub_rn(m, vm), kLog2e)));
      m = vm;
    }
    if (m == -INFINITY) return;
#pragma unroll
    for (int i = 0; i < N; ++i) s = __fadd_rn(s, exp2f(__fmul_rn(__fsub_rn(x[i], m), kLog2e)));
  }

  __device__ __forceinline__ void Add(float x) {
    const float one[1] = {x};
    AddN(one);
  }

  __device__ __forceinline__ void Merge(float om, float os) {
    const float nm = fmaxf(m, om);
    if (nm == -INFINITY) return;
    s = __fadd_rn(__fmul_rn(s, exp2f(__fmul_rn(__fsub_rn(m, nm), kLog2e))),
                  __fmul_rn(os, exp2f(__fmul_rn(__fsub_rn(om, nm), kLog2e))));
    m = nm;
  }

  // log(sum exp(x)); -inf when empty or all -inf.
  __device__ __forceinline__ float Lse() const {
    if (m == -INFINITY) return -INFINITY;
    return __fadd_rn(m, logf(s));
  }
};

__device__ __forceinline__ MaxSum WarpReduce(MaxSum v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, v.m, offset);
    const float os = __shfl_xor_sync(0xffffffffu, v.s, offset);
    v.Merge(om, os);
  }
  return v;
}

// Block-wide reduction; every thread gets the result. `scratch` holds 2 * 32 floats. Must be
// called by all threads of the block.
__device__ __forceinline__ MaxSum BlockReduce(MaxSum v, float* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = (blockDim.x + 31) >> 5;
  v = WarpReduce(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) {
    scratch[warp] = v.m;
    scratch[32 + warp] = v.s;
  }
  __syncthreads();
  MaxSum r;
  if (lane < num_warps) {
    r.m = scratch[lane];
    r.s = scratch[32 + lane];
  }
  return WarpReduce(r);
}

}  // namespace igdbeam::cuda
