// Launch-error checks for the CUDA host wrappers: never synchronise, only read the last error.
#pragma once

#include <stdexcept>

#include "cuda_compat.cuh"
#include "igdbeam/errors.h"

// Throws std::runtime_error with the CUDA error string and the file:line of the failing call.
#define IGD_CUDA_CHECK(expr)                                                                      \
  do {                                                                                            \
    const cudaError_t igd_err_ = (expr);                                                          \
    if (igd_err_ != cudaSuccess)                                                                  \
      throw std::runtime_error(::igdbeam::detail::Concat(                                         \
          __FILE__, ":", __LINE__, ": CUDA error: ", #expr, ": ", cudaGetErrorString(igd_err_))); \
  } while (0)

// Checks the launch that was just enqueued (configuration errors, no device synchronisation).
#define IGD_CUDA_CHECK_LAUNCH() IGD_CUDA_CHECK(cudaGetLastError())

namespace igdbeam::cuda {

inline cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace igdbeam::cuda
