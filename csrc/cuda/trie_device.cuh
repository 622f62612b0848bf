// Device-side trie helpers beyond FindChild: child ranges clipped to the vocabulary.
#pragma once

#include <cstdint>

#include "cuda_compat.cuh"
#include "igdbeam/trie.h"
#include "igdbeam/trie_lookup.h"

namespace igdbeam::cuda {

// First index in [lo, hi) whose token is >= value (tokens ascending there), else hi.
__device__ __forceinline__ int32_t LowerBoundToken(const int32_t* token, int32_t lo, int32_t hi,
                                                   int64_t value) {
  while (lo < hi) {
    const int32_t mid = lo + ((hi - lo) >> 1);
    if (static_cast<int64_t>(__ldg(token + mid)) < value) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// FindChild for a whole warp (all 32 lanes call it with the same node and token; every lane gets
// the answer): each round the lanes probe 32 evenly spaced children, so a node with f children
// costs about log32(f) dependent loads instead of log2(f).
__device__ __forceinline__ int32_t WarpFindChild(const TrieView& trie, int32_t node,
                                                 int64_t token) {
  const int lane = threadIdx.x & 31;
  if (node < 0) return -1;
  int32_t lo = __ldg(trie.child_offsets + node);
  int32_t hi = __ldg(trie.child_offsets + node + 1);
  while (hi - lo > 32) {
    const int32_t step = (hi - lo + 31) / 32;
    const int32_t idx = lo + lane * step;
    const bool le = idx < hi && static_cast<int64_t>(__ldg(trie.token + idx)) <= token;
    const unsigned mask = __ballot_sync(0xffffffffu, le);
    if (mask == 0) return -1;  // token below the first child
    lo += (31 - __clz(mask)) * step;
    hi = lo + step < hi ? lo + step : hi;
  }
  const int32_t idx = lo + lane;
  const bool hit = idx < hi && static_cast<int64_t>(__ldg(trie.token + idx)) == token;
  const unsigned mask = __ballot_sync(0xffffffffu, hit);
  return mask ? lo + __ffs(mask) - 1 : -1;
}

// The children [lo, hi) of `node` whose tokens lie below `vocab`; empty for a leaf or for a node
// id outside [0, num_nodes) (an inactive beam).
struct ChildRange {
  int32_t lo = 0;
  int32_t hi = 0;
  __device__ __forceinline__ int32_t size() const { return hi - lo; }
};

__device__ __forceinline__ ChildRange ChildrenInVocab(const TrieView& trie, int32_t node,
                                                      int64_t vocab) {
  ChildRange c;
  if (node < 0 || node >= trie.num_nodes) return c;
  c.lo = __ldg(trie.child_offsets + node);
  const int32_t hi = __ldg(trie.child_offsets + node + 1);
  c.hi = (hi > c.lo && __ldg(trie.token + hi - 1) >= vocab)
             ? LowerBoundToken(trie.token, c.lo, hi, vocab)
             : hi;
  return c;
}

}  // namespace igdbeam::cuda
