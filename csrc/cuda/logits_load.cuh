// Scalar types of logits and scores: conversion to/from float, 16-byte vector loads and stores,
// and the dispatch from igdbeam::ScalarType to a C++ type.
#pragma once

#include <cstdint>
#include <stdexcept>

#include "cuda_compat.cuh"
#include "igdbeam/errors.h"
#include "igdbeam/kernels.h"

namespace igdbeam::cuda {

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float x) {
  return __float2half_rn(x);
}

// Read-only load of one element through the non-coherent path.
template <typename T>
__device__ __forceinline__ float LoadFloat(const T* p) {
  return ToFloat(__ldg(p));
}

// Elements of T in one 16-byte vector.
template <typename T>
struct Vec {
  static constexpr int kSize = 16 / static_cast<int>(sizeof(T));
};

// Loads a 16-byte vector and converts it to floats. kStream: read-once data (evict first, never
// written by the kernel); otherwise a plain coherent load.
template <typename T, bool kStream>
__device__ __forceinline__ void LoadVec(const T* p, float (&out)[Vec<T>::kSize]) {
  const uint4 raw =
      kStream ? __ldcs(reinterpret_cast<const uint4*>(p)) : *reinterpret_cast<const uint4*>(p);
  const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < Vec<T>::kSize; ++i) out[i] = ToFloat(v[i]);
}

// Plain coherent load of one element (for rows the same kernel rewrites).
template <typename T>
__device__ __forceinline__ float LoadFloatPlain(const T* p) {
  return ToFloat(*p);
}

// Stores VEC copies of `value` as one 16-byte vector.
template <typename T>
__device__ __forceinline__ void StoreVecFill(T* p, float value) {
  uint4 raw;
  T* v = reinterpret_cast<T*>(&raw);
  const T x = FromFloat<T>(value);
#pragma unroll
  for (int i = 0; i < Vec<T>::kSize; ++i) v[i] = x;
  *reinterpret_cast<uint4*>(p) = raw;
}

template <typename T>
__device__ __forceinline__ void StoreVec(T* p, const float (&values)[Vec<T>::kSize]) {
  uint4 raw;
  T* v = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int i = 0; i < Vec<T>::kSize; ++i) v[i] = FromFloat<T>(values[i]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// True when every row of a [rows, *] array with this base and row stride starts 16-byte aligned.
inline bool RowsAligned16(const void* base, int64_t row_stride, int64_t elem_size) {
  return (reinterpret_cast<std::uintptr_t>(base) % 16 == 0) && ((row_stride * elem_size) % 16 == 0);
}

inline int64_t ElementSize(ScalarType dtype) { return dtype == ScalarType::kFloat32 ? 4 : 2; }

}  // namespace igdbeam::cuda

// Runs the following statement with `scalar_t` bound to the C++ type of `dtype`.
#define IGD_DISPATCH_FLOAT_TYPES(dtype, ...)                                     \
  do {                                                                           \
    switch (dtype) {                                                             \
      case ::igdbeam::ScalarType::kFloat32: {                                    \
        using scalar_t = float;                                                  \
        __VA_ARGS__;                                                             \
        break;                                                                   \
      }                                                                          \
      case ::igdbeam::ScalarType::kBFloat16: {                                   \
        using scalar_t = __nv_bfloat16;                                          \
        __VA_ARGS__;                                                             \
        break;                                                                   \
      }                                                                          \
      case ::igdbeam::ScalarType::kFloat16: {                                    \
        using scalar_t = __half;                                                 \
        __VA_ARGS__;                                                             \
        break;                                                                   \
      }                                                                          \
      default:                                                                   \
        throw ::igdbeam::InvalidArgument(::igdbeam::detail::Concat(              \
            "dtype code must be 0 (float32), 1 (bfloat16) or 2 (float16), got ", \
            static_cast<int>(dtype)));                                           \
    }                                                                            \
  } while (0)
