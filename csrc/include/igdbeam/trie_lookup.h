// Child lookup shared by the CPU and CUDA kernels.
#pragma once

#include <cstdint>

#include "igdbeam/trie.h"

#if defined(__CUDACC__)
#define IGD_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define IGD_HOST_DEVICE inline
#endif

namespace igdbeam {

// Returns the child of `node` reached by `token`, or -1. Children are sorted by token, so this is
// a binary search over [child_offsets[node], child_offsets[node + 1]).
IGD_HOST_DEVICE int32_t FindChild(const TrieView& trie, int32_t node, int64_t token) {
  int32_t lo = trie.child_offsets[node];
  int32_t hi = trie.child_offsets[node + 1];
  while (lo < hi) {
    const int32_t mid = lo + ((hi - lo) >> 1);
    const int64_t t = trie.token[mid];
    if (t == token) return mid;
    if (t < token) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return -1;
}

IGD_HOST_DEVICE bool IsLeaf(const TrieView& trie, int32_t node) {
  return trie.child_offsets[node] == trie.child_offsets[node + 1];
}

}  // namespace igdbeam
