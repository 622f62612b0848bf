// Per-request item filters and collaborative (CF) item scores, turned into per-node arrays that
// the decode steps read (README "Item filters and collaborative scores").
//
// BuildNodeFilters reduces per-row item inputs over the trie in one pass per row: a leaf gets the
// reduction over its items, every inner node the reduction over its children. Nodes are numbered
// breadth-first, so every child id is larger than its parent's and a pass from the last node down
// to the root sees each node's children finished (the CUDA twin runs one launch per depth level,
// deepest first). Two reductions share the pass:
//  * node mask bit r of node n = 1 when at least one allowed item lies below n (an item is
//    allowed when item_mask[r, i] != 0, or always without item_mask). The mask is bit-packed
//    and node-major: bit r % 64 of word [r / 64, n], so 64 rows share one pass over the trie
//    with word-wide ORs and the decode steps read one word per child;
//  * node_score[r, n] = log(sum over the allowed items i below n of exp(item_scores[r, i]))
//    (-inf when none), i.e. the CF model's log-mass of the prefix n.
#pragma once

#include <cstdint>

#include "igdbeam/trie.h"
#include "igdbeam/trie_lookup.h"

namespace igdbeam {

// The leaf -> item arrays of a trie (all host, or all device pointers): the part of the layout
// that TrieView leaves out.
struct LeafView {
  int64_t num_leaves = 0;
  int64_t num_items = 0;
  const int32_t* leaf_nodes = nullptr;         // [num_leaves], ascending node ids
  const int32_t* leaf_item_offsets = nullptr;  // [num_leaves + 1]
  const int32_t* leaf_items = nullptr;         // [leaf_item_offsets[num_leaves]] item ids
};

// Per-row item inputs. Row r of item_mask starts at item_mask + r * mask_row_stride (a stride of
// 0 gives every row the same items); the same for item_scores.
struct ItemInputs {
  const uint8_t* item_mask = nullptr;  // [rows, num_items], != 0 = may be recommended; null: all
  int64_t mask_row_stride = 0;
  const float* item_scores = nullptr;  // [rows, num_items] log-scores (finite or -inf); null: none
  int64_t scores_row_stride = 0;
};

// Outputs; either may be null (not computed).
struct NodeFilterOutput {
  uint64_t* node_mask = nullptr;  // [ceil(rows / 64), num_nodes] words (bits past rows are 0)
  float* node_score = nullptr;    // [rows, num_nodes]
};

// CPU: rows are split over up to num_threads threads. Throws InvalidArgument on bad shapes.
void BuildNodeFilters(const TrieView& trie, const LeafView& leaves, int64_t rows,
                      const ItemInputs& in, const NodeFilterOutput& out, int num_threads = 1);

// The per-node arrays as the decode steps read them (DecodeParams::filter). With node_mask, a
// child c whose bit f is 0 is treated like a token that is not a child at all: never a
// beam-step candidate, -inf in the processor, and left out of the renormalisation over the
// children. With node_score and score_weight != 0, the step score of an allowed child c of node n
// gains score_weight * (node_score[f, c] - node_score[f, n]) (-inf when node_score[f, c] is -inf):
// the CF model's log-probability of the continuation, which telescopes along a path to
// score_weight * (node_score[f, leaf] - node_score[f, root]). f is the filter row of the decoded
// row: rows[b] (beam step: batch row b; processor: scores row r), or b itself when rows is null.
struct NodeFilter {
  const uint64_t* node_mask = nullptr;  // [ceil(rows / 64), row_stride] words; null: all allowed
  const float* node_score = nullptr;    // [filter rows, row_stride]; null: no CF term
  float score_weight = 0.0f;            // 0: node_score unused
  const int32_t* rows = nullptr;        // filter row of each decoded row; null: the identity
  int64_t row_stride = 0;               // elements between rows (words, floats): num_nodes

  IGD_HOST_DEVICE bool has_mask() const { return node_mask != nullptr; }
  IGD_HOST_DEVICE bool has_score() const { return node_score != nullptr && score_weight != 0.0f; }
  // The filter row of decoded row b.
  IGD_HOST_DEVICE int64_t row(int64_t b) const { return rows ? static_cast<int64_t>(rows[b]) : b; }
};

// One filter row's node mask: allowed(n) reads bit `bit` of words[n]; no words: all allowed.
struct NodeMaskRow {
  const uint64_t* words = nullptr;
  int bit = 0;
  IGD_HOST_DEVICE bool allowed(int64_t node) const {
    return words == nullptr || ((words[node] >> bit) & 1u) != 0;
  }
};

IGD_HOST_DEVICE NodeMaskRow MaskRowOf(const NodeFilter& f, int64_t frow) {
  NodeMaskRow m;
  if (f.node_mask != nullptr) {
    m.words = f.node_mask + (frow >> 6) * f.row_stride;
    m.bit = static_cast<int>(frow & 63);
  }
  return m;
}

}  // namespace igdbeam
