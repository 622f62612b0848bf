// A CPU emulation of the CUDA features igdbeam's kernels use, for checking the kernels' logic on
// a machine without a GPU (tools/cuda_emu_check.sh). Each block runs as blockDim.x std::threads
// (blocks one after another); __syncthreads is a real barrier and the warp intrinsics exchange
// values through a 32-thread barrier, so a divergent barrier hangs (and is caught by a timeout)
// just as it would misbehave on a GPU. Not for speed, not built by CMake.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

// ---- bit casts and 16-bit floats ------------------------------------------------------------
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct __nv_bfloat16 {
  uint16_t bits;
};
struct __half {
  uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 x) {
  return __uint_as_float(static_cast<uint32_t>(x.bits) << 16);
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u = __float_as_uint(f);
  if (std::isnan(f)) return {static_cast<uint16_t>((u >> 16) | 0x40)};
  u += 0x7fff + ((u >> 16) & 1);
  return {static_cast<uint16_t>(u >> 16)};
}
inline float __half2float(__half x) {
  _Float16 h;
  std::memcpy(&h, &x.bits, 2);
  return static_cast<float>(h);
}
inline __half __float2half_rn(float f) {
  _Float16 h = static_cast<_Float16>(f);
  __half out;
  std::memcpy(&out.bits, &h, 2);
  return out;
}

inline unsigned short __half_as_ushort(__half h) { return h.bits; }
inline __half __ushort_as_half(unsigned short u) { return {u}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.bits; }

// ---- math and bit intrinsics ----------------------------------------------------------------
// Correctly rounded single operations (never contracted into an FMA on the device).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline int __ffs(unsigned x) { return x ? __builtin_ctz(x) + 1 : 0; }
inline int __clz(unsigned x) { return x ? __builtin_clz(x) : 32; }
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
template <typename T>
inline T __ldcs(const T* p) {
  return *p;
}
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }

// ---- blocks, barriers and warps -------------------------------------------------------------
namespace igdbeam::emu {

// A reusable barrier that also reduces an int over the arrivals (sum and or).
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  int Arrive(int value, bool want_or) {
    std::unique_lock<std::mutex> lock(m_);
    const uint64_t gen = gen_;
    sum_ += value;
    any_ |= value != 0;
    if (++count_ == n_) {
      result_ = want_or ? static_cast<int>(any_) : sum_;
      count_ = 0;
      sum_ = 0;
      any_ = false;
      ++gen_;
      cv_.notify_all();
      return result_;
    }
    cv_.wait(lock, [&] { return gen_ != gen; });
    return result_;
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, count_ = 0, sum_ = 0, result_ = 0;
  bool any_ = false;
  uint64_t gen_ = 0;
};

struct BlockContext {
  explicit BlockContext(int threads) : block(threads), slots(threads) {
    for (int w = 0; w < (threads + 31) / 32; ++w) warps.emplace_back(new Barrier(32));
  }
  Barrier block;
  std::vector<std::unique_ptr<Barrier>> warps;
  std::vector<uint64_t> slots;
  std::vector<unsigned char> dynamic_shared;
};

extern thread_local BlockContext* tls_block;

inline Barrier& WarpBarrier() { return *tls_block->warps[threadIdx.x / 32]; }

template <typename T>
T Shuffle(T v, int src_lane) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  tls_block->slots[threadIdx.x] = bits;
  WarpBarrier().Arrive(0, false);
  const uint64_t got = tls_block->slots[(threadIdx.x / 32) * 32 + (src_lane & 31)];
  WarpBarrier().Arrive(0, false);
  T out;
  std::memcpy(&out, &got, sizeof(T));
  return out;
}

// Runs kernel(args...) over the grid: blocks in turn, each as blockDim.x threads.
struct Launcher {
  dim3 grid, block;
  size_t shared_bytes;
  template <typename Kernel, typename... Args>
  void Run(Kernel kernel, Args... args) const {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        BlockContext ctx(static_cast<int>(block.x));
        ctx.dynamic_shared.assign(shared_bytes + 16, 0xA5);
        std::vector<std::thread> threads;
        threads.reserve(block.x);
        for (unsigned t = 0; t < block.x; ++t) {
          threads.emplace_back([&, t, bx, by] {
            threadIdx = {t, 0, 0};
            blockIdx = {bx, by, 0};
            blockDim = block;
            gridDim = grid;
            tls_block = &ctx;
            kernel(args...);
          });
        }
        for (auto& th : threads) th.join();
      }
    }
  }
};

template <typename Kernel>
struct BoundLaunch {
  Kernel kernel;
  Launcher launcher;
  template <typename... Args>
  void operator()(Args... args) const {
    launcher.Run(kernel, args...);
  }
};

template <typename Kernel>
BoundLaunch<Kernel> MakeLaunch(Kernel kernel, dim3 grid, dim3 block, size_t shared_bytes) {
  return {kernel, Launcher{grid, block, shared_bytes}};
}

}  // namespace igdbeam::emu

inline void __syncthreads() { igdbeam::emu::tls_block->block.Arrive(0, false); }
inline int __syncthreads_count(int p) {
  return igdbeam::emu::tls_block->block.Arrive(p != 0, false);
}
inline int __syncthreads_or(int p) { return igdbeam::emu::tls_block->block.Arrive(p != 0, true); }
template <typename T>
inline T __shfl_sync(unsigned, T v, int src) {
  return igdbeam::emu::Shuffle(v, src);
}
template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int mask) {
  return igdbeam::emu::Shuffle(v, static_cast<int>(threadIdx.x & 31) ^ mask);
}
inline unsigned __ballot_sync(unsigned, int p) {
  auto* ctx = igdbeam::emu::tls_block;
  const unsigned lane = threadIdx.x & 31;
  const unsigned base = threadIdx.x - lane;
  ctx->slots[threadIdx.x] = p != 0;
  igdbeam::emu::WarpBarrier().Arrive(0, false);
  unsigned mask = 0;
  for (unsigned l = 0; l < 32; ++l)
    if (ctx->slots[base + l]) mask |= 1u << l;
  igdbeam::emu::WarpBarrier().Arrive(0, false);
  return mask;
}

// ---- the runtime API the host wrappers call -------------------------------------------------
using cudaError_t = int;
using cudaStream_t = void*;
using cudaMemPool_t = void*;
constexpr cudaError_t cudaSuccess = 0;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
enum cudaMemPoolAttr { cudaMemPoolAttrReleaseThreshold = 4 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated"; }
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) {
  *v = 4;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetMemPool(cudaMemPool_t* p, int) {
  *p = nullptr;
  return cudaSuccess;
}
inline cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t, cudaMemPoolAttr, void* v) {
  *static_cast<uint64_t*>(v) = 1;
  return cudaSuccess;
}
inline cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) {
  return cudaSuccess;
}
inline cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t) {
  *p = std::malloc(n + 16);
  std::memset(*p, 0xA5, n);
  return cudaSuccess;
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  std::free(p);
  return cudaSuccess;
}
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) {
  return cudaSuccess;
}

#define IGD_LAUNCH(kernel, grid, block, shared_bytes, stream) \
  ::igdbeam::emu::MakeLaunch(kernel, dim3(grid), dim3(block), (shared_bytes))
#define IGD_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::igdbeam::emu::tls_block->dynamic_shared.data())
