// Helpers shared by the CPU decode kernels: scalar conversion of float16/bfloat16 by bit
// manipulation, and a vectorisable log-sum-exp over one row.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "igdbeam/kernels.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace igdbeam::cpu {

inline float BitsToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint32_t FloatToBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

inline float BFloat16ToFloat(uint16_t h) { return BitsToFloat(static_cast<uint32_t>(h) << 16); }

// Round to nearest even; NaN stays a (quiet) NaN.
inline uint16_t FloatToBFloat16(float f) {
  const uint32_t bits = FloatToBits(f);
  if (std::isnan(f)) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  const uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

inline float Float16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1Fu) return BitsToFloat(sign | 0x7F800000u | (mantissa << 13));  // inf/NaN
  if (exponent != 0) return BitsToFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  if (mantissa == 0) return BitsToFloat(sign);  // +-0
  // Subnormal: normalise.
  int32_t e = -1;
  do {
    ++e;
    mantissa <<= 1;
  } while ((mantissa & 0x400u) == 0);
  return BitsToFloat(sign | (static_cast<uint32_t>(112 - e) << 23) | ((mantissa & 0x3FFu) << 13));
}

// Round to nearest even, with overflow to inf and gradual underflow.
inline uint16_t FloatToFloat16(float f) {
  const uint32_t bits = FloatToBits(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs_bits = bits & 0x7FFFFFFFu;
  if (abs_bits >= 0x7F800000u) {  // inf or NaN
    return static_cast<uint16_t>(sign | 0x7C00u | (abs_bits > 0x7F800000u ? 0x200u : 0u));
  }
  if (abs_bits >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to inf
  if (abs_bits < 0x38800000u) {                                               // subnormal half
    if (abs_bits < 0x33000000u) return sign;                                  // rounds to 0
    const uint32_t exponent = abs_bits >> 23;
    const uint32_t mantissa = (abs_bits & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126u - exponent;  // 14..24
    uint32_t half = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = ((abs_bits - 0x38000000u) >> 13);
  const uint32_t rest = abs_bits & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;
  return static_cast<uint16_t>(sign | half);
}

template <ScalarType kType>
struct Scalar;

template <>
struct Scalar<ScalarType::kFloat32> {
  using Storage = float;
  static float Load(float v) { return v; }
  static float Store(float v) { return v; }
};

template <>
struct Scalar<ScalarType::kBFloat16> {
  using Storage = uint16_t;
  static float Load(uint16_t v) { return BFloat16ToFloat(v); }
  static uint16_t Store(float v) { return FloatToBFloat16(v); }
};

template <>
struct Scalar<ScalarType::kFloat16> {
  using Storage = uint16_t;
  static float Load(uint16_t v) { return Float16ToFloat(v); }
  static uint16_t Store(float v) { return FloatToFloat16(v); }
};

// Fills n elements of 2 or 4 bytes with `value`. Rows of scores are large and written once, so
// on x86 the bulk uses non-temporal stores (no read-for-ownership, no cache pollution).
template <typename T>
void FillRow(T* row, int64_t n, T value) {
#if defined(__SSE2__)
  static_assert(sizeof(T) == 2 || sizeof(T) == 4, "2- or 4-byte elements only");
  int64_t i = 0;
  while (i < n && (reinterpret_cast<std::uintptr_t>(row + i) & 15u) != 0) row[i++] = value;
  if (n - i >= 64) {
    alignas(16) T pattern[16 / sizeof(T)];
    for (auto& p : pattern) p = value;
    const __m128i v = _mm_load_si128(reinterpret_cast<const __m128i*>(pattern));
    constexpr int64_t kPer = 16 / sizeof(T);
    for (; i + kPer <= n; i += kPer) _mm_stream_si128(reinterpret_cast<__m128i*>(row + i), v);
    _mm_sfence();
  }
  for (; i < n; ++i) row[i] = value;
#else
  for (int64_t i = 0; i < n; ++i) row[i] = value;
#endif
}

// exp(x) for x <= 0 to about 2 ulp (Cephes-style range reduction and a degree-6 polynomial),
// written without branches so that the compiler can vectorise the loops that call it.
inline float ExpNonPositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t e = static_cast<int32_t>(n) + 127;
  return p * BitsToFloat(static_cast<uint32_t>(e) << 23);
}

// log(sum_j exp(row[j] * scale)) over one row, stable (max pass, then sum-exp pass). Returns
// -inf for an all -inf row and NaN when the row holds a NaN.
template <ScalarType kType>
double RowLogSumExp(const typename Scalar<kType>::Storage* row, int64_t n, float scale) {
  constexpr int kLanes = 16;
  float lane_max[kLanes];
  for (int l = 0; l < kLanes; ++l) lane_max[l] = -std::numeric_limits<float>::infinity();
  bool has_nan = false;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float v = Scalar<kType>::Load(row[j + l]) * scale;
      lane_max[l] = v > lane_max[l] ? v : lane_max[l];
      has_nan |= (v != v);
    }
  }
  float m = -std::numeric_limits<float>::infinity();
  for (; j < n; ++j) {
    const float v = Scalar<kType>::Load(row[j]) * scale;
    m = v > m ? v : m;
    has_nan |= (v != v);
  }
  for (int l = 0; l < kLanes; ++l) m = lane_max[l] > m ? lane_max[l] : m;
  if (has_nan) return std::numeric_limits<double>::quiet_NaN();
  if (std::isinf(m)) return m;  // all -inf (or a +inf entry)
  // Float lanes over short blocks, flushed into a double total, keep the sum accurate for
  // vocabularies of any size.
  constexpr int64_t kBlock = kLanes * 64;
  double total = 0.0;
  j = 0;
  for (; j + kBlock <= n; j += kBlock) {
    float lane_sum[kLanes] = {};
    for (int64_t b = 0; b < kBlock; b += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        lane_sum[l] += ExpNonPositive(Scalar<kType>::Load(row[j + b + l]) * scale - m);
      }
    }
    for (int l = 0; l < kLanes; ++l) total += lane_sum[l];
  }
  for (; j < n; ++j) total += ExpNonPositive(Scalar<kType>::Load(row[j]) * scale - m);
  return static_cast<double>(m) + std::log(total);
}

}  // namespace igdbeam::cpu
