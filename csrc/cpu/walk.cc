// CPU walk of token rows through the trie.
#include "igdbeam/kernels.h"
#include "igdbeam/trie_lookup.h"

namespace igdbeam {

void WalkPaths(const TrieView& trie, const int64_t* tokens, int64_t rows, int64_t cols,
               int64_t row_stride, const int64_t* lengths, int32_t* out_nodes) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t len = lengths ? lengths[r] : cols;
    const int64_t* row = tokens + r * row_stride;
    int32_t node = 0;
    for (int64_t i = 0; i < len && node >= 0; ++i) node = FindChild(trie, node, row[i]);
    out_nodes[r] = node;
  }
}

}  // namespace igdbeam
