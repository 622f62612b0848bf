// Error handling of the CUDA host wrappers: no exception is ever thrown from nvcc-compiled code
// (on some toolchains one crashes the process instead of reaching the bindings). Every check
// returns an igdbeam::cuda::Status from the enclosing function; launch checks never synchronise,
// they only read the last error.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>

#include "cuda_compat.cuh"
#include "igdbeam/cuda_kernels.h"
#include "igdbeam/errors.h"

// The throwing checks of errors.h must not be used here: a use is a compile error.
#undef IGD_CHECK_ARG
#undef IGD_CHECK

namespace igdbeam::cuda {

inline Status OkStatus() noexcept {
  Status s;
  s.code = Status::kOk;
  s.message[0] = '\0';
  return s;
}

// Message pieces are appended with snprintf into the status's fixed buffer: no iostreams and
// no std::string in nvcc-compiled code (on the GPU machines an error message built with
// std::ostringstream there crashed the process).
inline void AppendPiece(Status& s, size_t& pos, const char* text) noexcept {
  if (pos + 1 >= Status::kMessageSize) return;
  const int n = std::snprintf(s.message + pos, Status::kMessageSize - pos, "%s", text ? text : "");
  if (n > 0)
    pos = pos + static_cast<size_t>(n) < Status::kMessageSize ? pos + n : Status::kMessageSize - 1;
}

template <typename T>
inline void AppendPiece(Status& s, size_t& pos, const T& value) noexcept {
  char buf[64];
  if constexpr (std::is_floating_point_v<T>) {
    std::snprintf(buf, sizeof(buf), "%g", static_cast<double>(value));
  } else if constexpr (std::is_signed_v<T>) {
    std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(value));
  } else {
    std::snprintf(buf, sizeof(buf), "%llu", static_cast<unsigned long long>(value));
  }
  AppendPiece(s, pos, static_cast<const char*>(buf));
}

// A status whose message is the concatenation of `pieces` (truncated to fit).
template <typename... Pieces>
inline Status MakeStatus(int code, const Pieces&... pieces) noexcept {
  Status s;
  s.code = code;
  s.message[0] = '\0';
  size_t pos = 0;
  (AppendPiece(s, pos, pieces), ...);
  return s;
}

inline cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace igdbeam::cuda

// Returns a kInvalidArgument status with a message built from the remaining arguments.
#define IGD_CUDA_CHECK_ARG(cond, ...)                                                             \
  do {                                                                                            \
    if (!(cond))                                                                                  \
      return ::igdbeam::cuda::MakeStatus(::igdbeam::cuda::Status::kInvalidArgument, __VA_ARGS__); \
  } while (0)

// Returns a kCudaError status with the CUDA error string and the file:line of the failing call.
#define IGD_CUDA_CHECK(expr)                                                                 \
  do {                                                                                       \
    const cudaError_t igd_err_ = (expr);                                                     \
    if (igd_err_ != cudaSuccess)                                                             \
      return ::igdbeam::cuda::MakeStatus(::igdbeam::cuda::Status::kCudaError, __FILE__, ":", \
                                         __LINE__, ": CUDA error: ", #expr, ": ",            \
                                         cudaGetErrorString(igd_err_));                      \
  } while (0)

// Checks the launch that was just enqueued (configuration errors, no device synchronisation).
#define IGD_CUDA_CHECK_LAUNCH() IGD_CUDA_CHECK(cudaGetLastError())

// Returns the status of `expr` (an igdbeam::cuda::Status) when it is not OK.
#define IGD_RETURN_IF_ERROR(expr)                       \
  do {                                                  \
    const ::igdbeam::cuda::Status igd_status_ = (expr); \
    if (!igd_status_.ok()) return igd_status_;          \
  } while (0)
