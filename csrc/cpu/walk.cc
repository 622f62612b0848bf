// CPU walk of token rows through the trie.
#include <cassert>

#include "igdbeam/errors.h"
#include "igdbeam/kernels.h"
#include "igdbeam/trie_lookup.h"

namespace igdbeam {

void WalkPaths(const TrieView& trie, const int64_t* tokens, int64_t rows, int64_t cols,
               int64_t row_stride, const int64_t* lengths, int32_t* out_nodes) {
  // The bindings checked the shape once (debug builds assert it); the lengths are read from
  // memory and checked here (O(rows)). The walk only compares input tokens, so any int64 token
  // value is safe.
  assert(trie.num_nodes >= 1 && rows >= 0 && cols >= 0 && row_stride >= 0);
  if (lengths != nullptr) {
    for (int64_t r = 0; r < rows; ++r) {
      IGD_CHECK_ARG(lengths[r] >= 0 && lengths[r] <= cols, "lengths[", r, "] = ", lengths[r],
                    " lies outside [0, cols=", cols, "]");
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t len = lengths ? lengths[r] : cols;
    const int64_t* row = tokens + r * row_stride;
    int32_t node = 0;
    for (int64_t i = 0; i < len && node >= 0; ++i) node = FindChild(trie, node, row[i]);
    out_nodes[r] = node;
  }
}

}  // namespace igdbeam
