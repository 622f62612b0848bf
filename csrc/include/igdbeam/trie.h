// The item trie: a catalog of token paths stored as flat CSR arrays.
//
// Layout (the contract every backend reads; see README "Trie layout"):
//  * Nodes are numbered breadth-first, root = 0, and the children of a node are numbered
//    consecutively in ascending token order. So the children of node n are exactly the node ids
//    [child_offsets[n], child_offsets[n + 1]) and no separate child-id array is needed.
//  * Per-node arrays describe the node and the edge that enters it (root: token -1, IG 0):
//    token, parent, depth, entropy H(n), info_gain IG = H(parent) - H(n), info_gain_norm IG~
//    (min-max normalised among siblings), zero_ig (1 for a zero-IG edge: the siblings' weight
//    sum is exactly 0, a single child being the common case; such an edge's IG is exactly 0).
//  * Leaves (nodes without children) carry items: leaf_nodes (ascending), leaf_item_offsets and
//    leaf_items list the item ids of each leaf; item_leaf maps every item id to its leaf.
#pragma once

#include <cstdint>
#include <vector>

namespace igdbeam {

enum class EntropyMode : int32_t { kGlobal = 0, kConditional = 1 };

// Non-owning view of the trie arrays, host or device pointers alike.
struct TrieView {
  int64_t num_nodes = 0;
  const int32_t* child_offsets = nullptr;  // [num_nodes + 1]
  const int32_t* token = nullptr;          // [num_nodes]
  const int32_t* parent = nullptr;         // [num_nodes]
  const uint16_t* depth = nullptr;         // [num_nodes]
  const float* entropy = nullptr;          // [num_nodes]
  const float* info_gain = nullptr;        // [num_nodes]
  const float* info_gain_norm = nullptr;   // [num_nodes]
  const uint8_t* zero_ig = nullptr;        // [num_nodes]
  // The largest child count of any node (0: unknown). A static bound the CUDA beam step sizes
  // its launch with, so that it never reads the trie on the host.
  int32_t max_fanout = 0;
};

// Owning result of a build. Vectors are handed to Python without copying.
struct TrieArrays {
  std::vector<int32_t> child_offsets, token, parent;
  std::vector<uint16_t> depth;
  std::vector<float> entropy, info_gain, info_gain_norm;
  std::vector<uint8_t> zero_ig;
  std::vector<int32_t> leaf_nodes, leaf_item_offsets, leaf_items, item_leaf;
  std::vector<double> leaf_weight;  // summed item weight of each leaf (leaf_nodes order)
  int32_t max_depth = 0;
  int32_t max_fanout = 0;

  TrieView View() const;
};

// Token paths in CSR form: item i is tokens[offsets[i], offsets[i + 1]).
struct TokenPaths {
  const int64_t* offsets = nullptr;  // [num_items + 1]
  const int64_t* tokens = nullptr;   // [offsets[num_items]]
  int64_t num_items = 0;
};

struct BuildOptions {
  EntropyMode entropy = EntropyMode::kGlobal;
  int64_t vocab_size = -1;      // > 0: every token must lie in [0, vocab_size)
  double equal_ig_rtol = 1e-9;  // siblings whose IG spread is below this count as equal
};

// Builds the trie. weights may be null (uniform). Throws InvalidArgument naming the item.
TrieArrays BuildTrie(const TokenPaths& paths, const double* weights, const BuildOptions& options);

}  // namespace igdbeam
