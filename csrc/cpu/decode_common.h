// Helpers shared by the CPU decode kernels: scalar conversion of float16/bfloat16 by bit
// manipulation, and a vectorisable log-sum-exp over one row.
#pragma once

#include <algorithm>
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

// Four floats as one value: GCC/Clang vector extensions compile to one SSE2 register on a
// baseline x86-64 build (and to NEON on ARM).
typedef float Vec4f __attribute__((vector_size(16)));
typedef int32_t Vec4i __attribute__((vector_size(16)));
constexpr int kVec = 4;

template <ScalarType kType>
__attribute__((always_inline)) inline Vec4f LoadVec(const typename Scalar<kType>::Storage* p,
                                                    float scale) {
  float tmp[kVec];
  for (int l = 0; l < kVec; ++l) tmp[l] = Scalar<kType>::Load(p[l]);
  Vec4f v;
  std::memcpy(&v, tmp, sizeof(v));
  return v * scale;
}

// exp(x) for x <= 0, four at a time, to about 2 ulp: Cephes-style range reduction
// x = n ln2 + r with |r| <= ln2 / 2, a degree-6 polynomial for exp(r), and 2^n built in the
// exponent bits. Inputs below -87 are clamped (their exp is below float's normal range).
__attribute__((always_inline)) inline Vec4f ExpVec(Vec4f x) {
  const Vec4f lo = Vec4f{} - 87.0f;
  x = x < lo ? lo : x;
  // Round to nearest by adding and removing 1.5 * 2^23 (no SSE4.1 roundps needed).
  const Vec4f n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  Vec4f r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  Vec4f p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const Vec4i bits = (__builtin_convertvector(n, Vec4i) + 127) << 23;
  Vec4f pow2n;
  std::memcpy(&pow2n, &bits, sizeof(pow2n));
  return p * pow2n;
}

// log(sum_j exp(row[j] * scale)) over one row, stable (max pass, then sum-exp pass). Returns
// -inf for an all -inf row and NaN when the row holds a NaN.
template <ScalarType kType>
double RowLogSumExp(const typename Scalar<kType>::Storage* row, int64_t n, float scale) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  Vec4f vmax = Vec4f{} - kInf;
  Vec4i nan_seen = Vec4i{};
  int64_t j = 0;
  for (; j + kVec <= n; j += kVec) {
    const Vec4f v = LoadVec<kType>(row + j, scale);
    vmax = v > vmax ? v : vmax;
    nan_seen |= (v != v);
  }
  float m = -kInf;
  bool has_nan = false;
  for (int l = 0; l < kVec; ++l) {
    m = vmax[l] > m ? vmax[l] : m;
    has_nan |= nan_seen[l] != 0;
  }
  for (int64_t t = j; t < n; ++t) {
    const float v = Scalar<kType>::Load(row[t]) * scale;
    m = v > m ? v : m;
    has_nan |= (v != v);
  }
  if (has_nan) return std::numeric_limits<double>::quiet_NaN();
  if (std::isinf(m)) return m;  // all -inf (or a +inf entry)
  // Float lanes over short blocks, flushed into a double total, keep the sum accurate for
  // vocabularies of any size.
  constexpr int64_t kBlock = 1024;
  double total = 0.0;
  j = 0;
  for (; j < n - n % kVec;) {
    const int64_t end = std::min<int64_t>(j + kBlock, n - n % kVec);
    Vec4f acc0 = Vec4f{}, acc1 = Vec4f{};
    for (; j + 2 * kVec <= end; j += 2 * kVec) {
      acc0 += ExpVec(LoadVec<kType>(row + j, scale) - m);
      acc1 += ExpVec(LoadVec<kType>(row + j + kVec, scale) - m);
    }
    for (; j < end; j += kVec) acc0 += ExpVec(LoadVec<kType>(row + j, scale) - m);
    acc0 += acc1;
    for (int l = 0; l < kVec; ++l) total += acc0[l];
  }
  for (; j < n; ++j) {
    Vec4f v = Vec4f{} - kInf;
    v[0] = Scalar<kType>::Load(row[j]) * scale - m;
    total += ExpVec(v)[0];
  }
  return static_cast<double>(m) + std::log(total);
}

}  // namespace igdbeam::cpu
