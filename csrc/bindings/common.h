// Helpers shared by the binding files: raw-pointer views and zero-copy numpy arrays.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <utility>
#include <vector>

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

// Each op's binding lives in its own file and registers itself here.
void RegisterTrie(py::module_& m);
void RegisterWeights(py::module_& m);
void RegisterDecode(py::module_& m);
void RegisterCuda(py::module_& m);

}  // namespace igdbeam::bindings
