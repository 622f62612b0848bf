// Error handling of the CUDA host wrappers: no exception is ever thrown from nvcc-compiled code
// (on some toolchains one crashes the process instead of reaching the bindings). Every check
// returns an igdbeam::cuda::Status from the enclosing function; launch checks never synchronise,
// they only read the last error.
#pragma once

#include <cstring>
#include <string>

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

// A status with `message` (truncated to fit). Building the message may still fail to allocate;
// that is not handled (std::terminate, as noexcept implies).
inline Status MakeStatus(int code, const std::string& message) noexcept {
  Status s;
  s.code = code;
  const size_t n =
      message.size() < Status::kMessageSize - 1 ? message.size() : Status::kMessageSize - 1;
  std::memcpy(s.message, message.data(), n);
  s.message[n] = '\0';
  return s;
}

inline cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace igdbeam::cuda

// Returns a kInvalidArgument status with a message built from the remaining arguments.
#define IGD_CUDA_CHECK_ARG(cond, ...)                                               \
  do {                                                                              \
    if (!(cond))                                                                    \
      return ::igdbeam::cuda::MakeStatus(::igdbeam::cuda::Status::kInvalidArgument, \
                                         ::igdbeam::detail::Concat(__VA_ARGS__));   \
  } while (0)

// Returns a kCudaError status with the CUDA error string and the file:line of the failing call.
#define IGD_CUDA_CHECK(expr)                                                                \
  do {                                                                                      \
    const cudaError_t igd_err_ = (expr);                                                    \
    if (igd_err_ != cudaSuccess)                                                            \
      return ::igdbeam::cuda::MakeStatus(                                                   \
          ::igdbeam::cuda::Status::kCudaError,                                              \
          ::igdbeam::detail::Concat(__FILE__, ":", __LINE__, ": CUDA error: ", #expr, ": ", \
                                    cudaGetErrorString(igd_err_)));                         \
  } while (0)

// Checks the launch that was just enqueued (configuration errors, no device synchronisation).
#define IGD_CUDA_CHECK_LAUNCH() IGD_CUDA_CHECK(cudaGetLastError())

// Returns the status of `expr` (an igdbeam::cuda::Status) when it is not OK.
#define IGD_RETURN_IF_ERROR(expr)                       \
  do {                                                  \
    const ::igdbeam::cuda::Status igd_status_ = (expr); \
    if (!igd_status_.ok()) return igd_status_;          \
  } while (0)
