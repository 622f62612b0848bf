// Scalar types of logits and scores: conversion to/from float, 16-byte vector loads and stores,
// and the dispatch from igdbeam::ScalarType to a C++ type.
#pragma once

#include <cstdint>

#include "cuda_check.cuh"
#include "cuda_compat.cuh"
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

// The elements of one 32-bit word as floats, and back. Bit operations, not pointer casts between
// unrelated types (which strict aliasing lets a compiler miscompile).
__device__ __forceinline__ void WordToFloats(uint32_t w, float* out, float) {
  out[0] = __uint_as_float(w);
}
__device__ __forceinline__ void WordToFloats(uint32_t w, float* out, __nv_bfloat16) {
  out[0] = __uint_as_float(w << 16);
  out[1] = __uint_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ void WordToFloats(uint32_t w, float* out, __half) {
  out[0] = __half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xffffu)));
  out[1] = __half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16)));
}
__device__ __forceinline__ uint32_t FloatsToWord(const float* v, float) {
  return __float_as_uint(v[0]);
}
__device__ __forceinline__ uint32_t FloatsToWord(const float* v, __nv_bfloat16) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(v[0]))) |
         (static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(v[1]))) << 16);
}
__device__ __forceinline__ uint32_t FloatsToWord(const float* v, __half) {
  return static_cast<uint32_t>(__half_as_ushort(__float2half_rn(v[0]))) |
         (static_cast<uint32_t>(__half_as_ushort(__float2half_rn(v[1]))) << 16);
}

// Loads a 16-byte vector and converts it to floats. kStream: read-once data (evict first, never
// written by the kernel); otherwise a plain coherent load.
template <typename T, bool kStream>
__device__ __forceinline__ void LoadVec(const T* p, float (&out)[Vec<T>::kSize]) {
  constexpr int kPerWord = 4 / static_cast<int>(sizeof(T));
  const uint4 raw =
      kStream ? __ldcs(reinterpret_cast<const uint4*>(p)) : *reinterpret_cast<const uint4*>(p);
  WordToFloats(raw.x, out, T());
  WordToFloats(raw.y, out + kPerWord, T());
  WordToFloats(raw.z, out + 2 * kPerWord, T());
  WordToFloats(raw.w, out + 3 * kPerWord, T());
}

// Plain coherent load of one element (for rows the same kernel rewrites).
template <typename T>
__device__ __forceinline__ float LoadFloatPlain(const T* p) {
  return ToFloat(*p);
}

template <typename T>
__device__ __forceinline__ void StoreVec(T* p, const float (&values)[Vec<T>::kSize]) {
  constexpr int kPerWord = 4 / static_cast<int>(sizeof(T));
  uint4 raw;
  raw.x = FloatsToWord(values, T());
  raw.y = FloatsToWord(values + kPerWord, T());
  raw.z = FloatsToWord(values + 2 * kPerWord, T());
  raw.w = FloatsToWord(values + 3 * kPerWord, T());
  *reinterpret_cast<uint4*>(p) = raw;
}

// True when every row of a [rows, *] array with this base and row stride starts 16-byte aligned.
inline bool RowsAligned16(const void* base, int64_t row_stride, int64_t elem_size) {
  return (reinterpret_cast<std::uintptr_t>(base) % 16 == 0) && ((row_stride * elem_size) % 16 == 0);
}

inline int64_t ElementSize(ScalarType dtype) { return dtype == ScalarType::kFloat32 ? 4 : 2; }

// OK for the dtypes IGD_DISPATCH_FLOAT_TYPES handles, else a kInvalidArgument status.
inline Status CheckFloatType(ScalarType dtype) noexcept {
  IGD_CUDA_CHECK_ARG(dtype == ScalarType::kFloat32 || dtype == ScalarType::kBFloat16 ||
                         dtype == ScalarType::kFloat16,
                     "dtype code must be 0 (float32), 1 (bfloat16) or 2 (float16), got ",
                     static_cast<int>(dtype));
  return OkStatus();
}

}  // namespace igdbeam::cuda

// Runs the following statement with `scalar_t` bound to the C++ type of `dtype`; for any other
// dtype, returns a kInvalidArgument status from the enclosing function (which returns a Status).
#define IGD_DISPATCH_FLOAT_TYPES(dtype, ...)           \
  do {                                                 \
    switch (dtype) {                                   \
      case ::igdbeam::ScalarType::kFloat32: {          \
        using scalar_t = float;                        \
        __VA_ARGS__;                                   \
        break;                                         \
      }                                                \
      case ::igdbeam::ScalarType::kBFloat16: {         \
        using scalar_t = __nv_bfloat16;                \
        __VA_ARGS__;                                   \
        break;                                         \
      }                                                \
      case ::igdbeam::ScalarType::kFloat16: {          \
        using scalar_t = __half;                       \
        __VA_ARGS__;                                   \
        break;                                         \
      }                                                \
      default:                                         \
        return ::igdbeam::cuda::CheckFloatType(dtype); \
    }                                                  \
  } while (0)
