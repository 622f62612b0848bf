// CPU build of the per-node item filter arrays (item_filters.h). Both reductions run a pass over
// the leaves (each leaf reduces its items) and a pass from the last node down to the root (each
// node's children have larger ids in the breadth-first numbering, so they are final by then).
//
// The mask is bit-parallel: up to 64 rows share one 64-bit word per item and per node (bit k =
// row 64 g + k), so one pass over the trie serves 64 rows with word-wide ORs; the node words are
// the output (item_filters.h) and the item masks are transposed into words in blocks that stay
// in the cache. The scores are float log-sum-exps, one row at a time.
#include "igdbeam/item_filters.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <thread>
#include <vector>

namespace igdbeam {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int64_t kGroup = 64;       // rows per mask word
constexpr int64_t kBlock = 1 << 12;  // items per transpose block

// Node mask words of rows [r0, r0 + nr), nr <= 64: words[n] gets bit k for row r0 + k.
void BuildMaskGroup(const TrieView& trie, const LeafView& leaves, int64_t r0, int64_t nr,
                    const ItemInputs& in, uint64_t* words) {
  const int64_t num_nodes = trie.num_nodes;
  const int64_t num_items = leaves.num_items;
  const uint64_t all = nr == 64 ? ~uint64_t{0} : (uint64_t{1} << nr) - 1;
  std::vector<uint64_t> item_bits;
  if (in.item_mask) {  // transposed block by block, so that the block's words stay in cache
    item_bits.assign(static_cast<size_t>(num_items), 0);
    for (int64_t i0 = 0; i0 < num_items; i0 += kBlock) {
      const int64_t i1 = std::min(num_items, i0 + kBlock);
      for (int64_t k = 0; k < nr; ++k) {
        const uint8_t* row = in.item_mask + (r0 + k) * in.mask_row_stride;
        for (int64_t i = i0; i < i1; ++i) item_bits[i] |= static_cast<uint64_t>(row[i] != 0) << k;
      }
    }
  }
  std::fill(words, words + num_nodes, uint64_t{0});
  for (int64_t l = 0; l < leaves.num_leaves; ++l) {
    uint64_t any = all;
    if (in.item_mask) {
      any = 0;
      for (int32_t j = leaves.leaf_item_offsets[l]; j < leaves.leaf_item_offsets[l + 1]; ++j)
        any |= item_bits[leaves.leaf_items[j]];
    }
    words[leaves.leaf_nodes[l]] = any;
  }
  // Children before parents: every node's word is final when it is folded into its parent's.
  const int32_t* parent = trie.parent;
  for (int64_t v = num_nodes - 1; v >= 1; --v) words[parent[v]] |= words[v];
}

// log(sum exp(x[i])) over values already known to have maximum m (finite).
template <typename Get>
float LogSumExpWithMax(int64_t n, float m, Get get) {
  float total = 0.0f;
  for (int64_t i = 0; i < n; ++i) total += std::exp(get(i) - m);
  return m + std::log(total);
}

// Node scores of rows [r0, r1).
void BuildScoreRows(const TrieView& trie, const LeafView& leaves, int64_t r0, int64_t r1,
                    const ItemInputs& in, float* node_score) {
  const int64_t num_nodes = trie.num_nodes;
  const int32_t* offsets = trie.child_offsets;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* item_mask = in.item_mask ? in.item_mask + r * in.mask_row_stride : nullptr;
    const float* item_score = in.item_scores + r * in.scores_row_stride;
    float* score = node_score + r * num_nodes;
    for (int64_t l = 0; l < leaves.num_leaves; ++l) {
      const int32_t lo = leaves.leaf_item_offsets[l];
      const int64_t n = leaves.leaf_item_offsets[l + 1] - lo;
      const int32_t* items = leaves.leaf_items + lo;
      auto get = [&](int64_t j) {
        return item_mask && item_mask[items[j]] == 0 ? kNegInf : item_score[items[j]];
      };
      float m = kNegInf;
      for (int64_t j = 0; j < n; ++j) m = std::max(m, get(j));
      score[leaves.leaf_nodes[l]] = m == kNegInf || n == 1 ? m : LogSumExpWithMax(n, m, get);
    }
    for (int64_t v = num_nodes - 1; v >= 0; --v) {
      const int32_t lo = offsets[v];
      const int32_t hi = offsets[v + 1];
      if (lo == hi) continue;  // a leaf, done above
      float m = kNegInf;
      for (int32_t c = lo; c < hi; ++c) m = std::max(m, score[c]);
      score[v] = m == kNegInf || hi - lo == 1
                     ? m
                     : LogSumExpWithMax(hi - lo, m, [&](int64_t j) { return score[lo + j]; });
    }
  }
}

// Runs work(t) for t in [0, tasks) on up to `threads` threads.
template <typename Work>
void ParallelFor(int64_t tasks, int64_t threads, Work work) {
  threads = std::max<int64_t>(1, std::min(threads, tasks));
  if (threads == 1) {
    for (int64_t t = 0; t < tasks; ++t) work(t);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads));
  for (int64_t w = 0; w < threads; ++w) {
    pool.emplace_back([&, w] {
      for (int64_t t = w; t < tasks; t += threads) work(t);
    });
  }
  for (auto& th : pool) th.join();
}

}  // namespace

void BuildNodeFilters(const TrieView& trie, const LeafView& leaves, int64_t rows,
                      const ItemInputs& in, const NodeFilterOutput& out, int num_threads) {
  // The bindings checked the arguments once (bindings/bind_filters.cc); debug builds assert them.
  assert(trie.num_nodes >= 1 && rows >= 0 && leaves.num_leaves >= 0 && leaves.num_items >= 0);
  assert(in.mask_row_stride >= 0 && in.scores_row_stride >= 0 && num_threads >= 1);
  assert(out.node_score == nullptr || in.item_scores != nullptr);
  if (rows == 0 || (out.node_mask == nullptr && out.node_score == nullptr)) return;
  const int64_t n = trie.num_nodes;
  if (leaves.num_leaves == 0) {  // an empty catalog: nothing lies below any node
    const int64_t groups = (rows + kGroup - 1) / kGroup;
    if (out.node_mask) std::fill(out.node_mask, out.node_mask + groups * n, uint64_t{0});
    if (out.node_score) std::fill(out.node_score, out.node_score + rows * n, kNegInf);
    return;
  }
  // Small jobs are not worth a thread.
  const int64_t threads = rows * (n + leaves.num_items) < (int64_t{1} << 16) ? 1 : num_threads;
  if (out.node_mask) {
    const int64_t groups = (rows + kGroup - 1) / kGroup;
    ParallelFor(groups, threads, [&](int64_t g) {
      const int64_t r0 = g * kGroup;
      BuildMaskGroup(trie, leaves, r0, std::min(kGroup, rows - r0), in, out.node_mask + g * n);
    });
  }
  if (out.node_score) {
    ParallelFor(rows, threads,
                [&](int64_t r) { BuildScoreRows(trie, leaves, r, r + 1, in, out.node_score); });
  }
}

}  // namespace igdbeam
