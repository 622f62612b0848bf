// Helpers shared by the binding files: raw-pointer views, zero-copy numpy arrays, and RunOp, the
// one place that runs an op on its backend and turns the outcome into a Python value.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "igdbeam/cuda_kernels.h"  // declarations only; defined in CUDA builds
#include "igdbeam/decode_checks.h"
#include "igdbeam/errors.h"
#include "igdbeam/kernels.h"
#include "igdbeam/trie.h"

namespace igdbeam::bindings {

namespace py = pybind11;

// Moves a vector onto the heap and returns a numpy array that owns it (no copy).
template <typename T>
py::array_t<T> ToNumpy(std::vector<T>&& values) {
  auto* owned = new std::vector<T>(std::move(values));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>({static_cast<py::ssize_t>(owned->size())}, {sizeof(T)}, owned->data(),
                        free_when_done);
}

template <typename T>
T* Ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

// A pointer argument that may be 0 (absent).
template <typename T>
T* OptionalPtr(std::uintptr_t address) {
  return address ? reinterpret_cast<T*>(address) : nullptr;
}

#if defined(IGDBEAM_WITH_CUDA)
inline constexpr bool kBuiltWithCuda = true;
#else
inline constexpr bool kBuiltWithCuda = false;
#endif

// The `device` argument of every op.
inline constexpr int kDeviceCpu = 0;
inline constexpr int kDeviceCuda = 1;

// Status codes returned to Python as (code, message); 0 is returned as None.
inline constexpr int kStatusOk = 0;
inline constexpr int kStatusInvalidArgument = cuda::Status::kInvalidArgument;  // 1
inline constexpr int kStatusRuntimeError = cuda::Status::kCudaError;           // 2
inline constexpr int kStatusNoCuda = 3;

// ---- Shared argument checks (throw InvalidArgument; RunOp turns that into code 1) -----------
inline ScalarType DtypeFromCode(int dtype_code) {
  IGD_CHECK_ARG(dtype_code >= 0 && dtype_code <= 2,
                "dtype_code must be 0 (float32), 1 (bfloat16) or 2 (float16), got ", dtype_code);
  return static_cast<ScalarType>(dtype_code);
}

inline void CheckTrie(const TrieView& trie) {
  IGD_CHECK_ARG(trie.num_nodes >= 1, "the trie view has no nodes");
}

// The NodeFilter arguments of the decode steps (item_filters.h); 0 pointers mean no filter.
inline NodeFilter MakeFilter(const TrieView& trie, std::uintptr_t node_mask,
                             std::uintptr_t node_score, float score_weight, std::uintptr_t rows,
                             int64_t row_stride) {
  NodeFilter f;
  f.node_mask = OptionalPtr<const uint64_t>(node_mask);
  f.node_score = OptionalPtr<const float>(node_score);
  f.score_weight = score_weight;
  f.rows = OptionalPtr<const int32_t>(rows);
  f.row_stride = row_stride;
  if (f.node_mask != nullptr || f.node_score != nullptr) {
    IGD_CHECK_ARG(row_stride >= trie.num_nodes, "filter_row_stride (", row_stride,
                  ") must be at least the trie's node count ", trie.num_nodes);
    IGD_CHECK_ARG(std::isfinite(score_weight), "score_weight must be finite, got ", score_weight);
  }
  return f;
}

// ---- Running an op --------------------------------------------------------------------------
namespace detail {

struct OpStatus {
  int code = kStatusOk;
  std::string message;
};

template <typename Check, typename Cpu, typename Cuda>
OpStatus RunOnBackend(const char* op, int device, std::uintptr_t stream, Check& check, Cpu& cpu,
                      Cuda& cuda) noexcept {
  try {
    IGD_CHECK_ARG(device == kDeviceCpu || device == kDeviceCuda,
                  "device must be 0 (CPU) or 1 (CUDA), got ", device);
    IGD_CHECK_ARG(device == kDeviceCuda || stream == 0, "stream must be 0 on the CPU, got ",
                  stream);
    check();
    if (device == kDeviceCpu) {
      cpu();
      return {};
    }
  } catch (const InvalidArgument& e) {
    return {kStatusInvalidArgument, e.what()};
  } catch (const std::exception& e) {
    return {kStatusRuntimeError, e.what()};
  } catch (...) {
    return {kStatusRuntimeError, std::string(op) + ": unknown C++ exception"};
  }
  if constexpr (kBuiltWithCuda) {
    const cuda::Status s = cuda(reinterpret_cast<void*>(stream));
    if (s.ok()) return {};
    return {s.code, s.message};
  } else {
    (void)cuda;
    return {kStatusNoCuda, std::string(op) +
                               " was asked to run on CUDA (device 1) but this igdbeam build has "
                               "no CUDA kernels"};
  }
}

}  // namespace detail

// Runs one op without the GIL and returns None, or the tuple (code, message) of a failure:
//  * check(): the argument checks shared by both backends (host code, before either runs);
//  * device 0: cpu() (C++ kernels; InvalidArgument -> code 1, any other exception -> code 2);
//  * device 1: cuda(void* stream) -> cuda::Status (codes 1 and 2), or code 3 in a build without
//    CUDA kernels. `cuda` must be a generic lambda ([&](auto stream) {...}): a build without
//    CUDA never instantiates it, so its cuda:: calls need no definition there.
// Nothing here throws: a C++ exception never crosses into Python from an op.
template <typename Check, typename Cpu, typename Cuda>
py::object RunOp(const char* op, int device, std::uintptr_t stream, Check&& check, Cpu&& cpu,
                 Cuda&& cuda) {
  detail::OpStatus status;
  {
    py::gil_scoped_release release;
    status = detail::RunOnBackend(op, device, stream, check, cpu, cuda);
  }
  if (status.code == kStatusOk) return py::none();
  return py::make_tuple(status.code, status.message);
}

// Each op family's bindings live in their own file and register themselves here.
void RegisterTrie(py::module_& m);     // bind_trie.cc: TrieView, build_trie
void RegisterWalk(py::module_& m);     // bind_walk.cc: walk_paths
void RegisterWeights(py::module_& m);  // bind_weights.cc: label_weights
void RegisterDecode(py::module_& m);   // bind_decode.cc: processor_step, beam_step
void RegisterFilters(py::module_& m);  // bind_filters.cc: build_node_filters

}  // namespace igdbeam::bindings
