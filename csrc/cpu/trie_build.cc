// Builds the CSR item trie from token paths: a breadth-first radix split (duplicates end in one
// leaf), then entropies bottom-up and information gains top-down.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "igdbeam/errors.h"
#include "igdbeam/trie.h"

namespace igdbeam {

TrieView TrieArrays::View() const {
  TrieView v;
  v.num_nodes = static_cast<int64_t>(token.size());
  v.child_offsets = child_offsets.data();
  v.token = token.data();
  v.parent = parent.data();
  v.depth = depth.data();
  v.entropy = entropy.data();
  v.info_gain = info_gain.data();
  v.info_gain_norm = info_gain_norm.data();
  v.zero_ig = zero_ig.data();
  v.max_fanout = max_fanout;
  return v;
}

namespace {

void ValidateInputs(const TokenPaths& paths, const double* weights, const BuildOptions& options) {
  IGD_CHECK_ARG(paths.num_items > 0, "the catalog is empty: give at least one item");
  IGD_CHECK_ARG(paths.offsets[0] == 0, "token path offsets must start at 0, got ",
                paths.offsets[0]);
  for (int64_t i = 0; i < paths.num_items; ++i) {
    const int64_t len = paths.offsets[i + 1] - paths.offsets[i];
    IGD_CHECK_ARG(len > 0, "item ", i, " has an empty token path");
    IGD_CHECK_ARG(len <= std::numeric_limits<uint16_t>::max(), "item ", i, " has ", len,
                  " tokens; paths are limited to 65535 tokens");
    for (int64_t k = paths.offsets[i]; k < paths.offsets[i + 1]; ++k) {
      const int64_t t = paths.tokens[k];
      IGD_CHECK_ARG(t >= 0, "item ", i, " has a negative token id ", t, " at position ",
                    k - paths.offsets[i]);
      IGD_CHECK_ARG(t <= std::numeric_limits<int32_t>::max(), "item ", i, " has token id ", t,
                    " that does not fit in 32 bits");
      IGD_CHECK_ARG(options.vocab_size <= 0 || t < options.vocab_size, "item ", i, " has token id ",
                    t, " at position ", k - paths.offsets[i], ", outside the vocabulary [0, ",
                    options.vocab_size, ")");
    }
  }
  IGD_CHECK_ARG(paths.offsets[paths.num_items] < std::numeric_limits<int32_t>::max(),
                "the catalog holds more than 2^31 tokens, the limit of 32-bit node ids");
  if (weights != nullptr) {
    double total = 0.0;
    for (int64_t i = 0; i < paths.num_items; ++i) {
      IGD_CHECK_ARG(std::isfinite(weights[i]) && weights[i] >= 0.0, "item ", i, " has weight ",
                    weights[i], "; weights must be finite and >= 0");
      total += weights[i];
    }
    IGD_CHECK_ARG(total > 0.0, "the item weights sum to 0; at least one item needs weight > 0");
  }
}

constexpr int64_t kPrefetchAhead = 16;
// Compact the token storage when a level sorted at least 1/kCompactEvery of all entries.
constexpr int64_t kCompactEvery = 8;

}  // namespace

TrieArrays BuildTrie(const TokenPaths& paths, const double* weights, const BuildOptions& options) {
  ValidateInputs(paths, weights, options);
  const int64_t n = paths.num_items;

  // 1. Breadth-first split. `items` holds one entry per item; each live node owns a segment of
  //    it, and at depth d a segment is ordered by the token at d (stable), so runs of equal
  //    tokens become the node's children in ascending token order, numbered consecutively.
  //    Entries carry their path's start and length, so each level reads one token per item.
  struct Entry {
    int64_t start;
    int32_t item;
    int32_t len;
  };
  std::vector<Entry> items(n);
  for (int64_t i = 0; i < n; ++i) {
    items[i] = {paths.offsets[i], static_cast<int32_t>(i),
                static_cast<int32_t>(paths.offsets[i + 1] - paths.offsets[i])};
  }
  std::vector<uint64_t> keys;
  std::vector<Entry> scratch;
  struct Segment {
    int32_t node;
    int32_t lo, hi;  // into items
  };
  std::vector<Segment> frontier{{0, 0, static_cast<int32_t>(n)}}, next;

  TrieArrays t;
  const int64_t reserve = paths.offsets[n] + 1;
  t.token.reserve(reserve);
  t.parent.reserve(reserve);
  t.depth.reserve(reserve);
  t.child_offsets.reserve(reserve + 1);
  t.token.push_back(-1);
  t.parent.push_back(-1);
  t.depth.push_back(0);
  // Leaves in creation order (ascending node id): segment of `items` and summed weight.
  std::vector<Segment> leaves;
  std::vector<double> leaf_weight;
  double total_weight = 0.0;
  auto add_child = [&](int32_t parent, int64_t depth, int64_t tok, int32_t lo, int32_t hi) {
    next.push_back({static_cast<int32_t>(t.token.size()), lo, hi});
    t.token.push_back(static_cast<int32_t>(tok));
    t.parent.push_back(parent);
    t.depth.push_back(static_cast<uint16_t>(depth));
  };

  // Token storage: the caller's int64 paths at first; once a level has reordered many entries,
  // the remaining suffixes are copied in `items` order into an int32 buffer, so later levels
  // read it front to back instead of jumping around the caller's array.
  std::vector<int32_t> tail, new_tail;
  bool compacted = false;
  int64_t reordered = 0;  // entries moved by sorting in the previous level
  auto token_at = [&](const Entry& entry, int64_t depth) -> int64_t {
    return compacted ? tail[entry.start + depth] : paths.tokens[entry.start + depth];
  };

  for (int64_t d = 0; !frontier.empty(); ++d) {
    next.clear();
    if (d > 0 && reordered * kCompactEvery >= n) {
      int64_t total = 0;
      for (const Segment& seg : frontier) {
        for (int32_t k = seg.lo; k < seg.hi; ++k) total += items[k].len - d;
      }
      new_tail.resize(total);
      int64_t pos = 0;
      for (const Segment& seg : frontier) {
        for (int32_t k = seg.lo; k < seg.hi; ++k) {
          Entry& entry = items[k];
          for (int64_t j = d; j < entry.len; ++j)
            new_tail[pos + j - d] = static_cast<int32_t>(token_at(entry, j));
          entry.start = pos - d;
          pos += entry.len - d;
        }
      }
      std::swap(tail, new_tail);
      compacted = true;
    }
    reordered = 0;
    for (const Segment& seg : frontier) {
      t.child_offsets.push_back(static_cast<int32_t>(t.token.size()));
      const int32_t size = seg.hi - seg.lo;
      Entry* e = items.data() + seg.lo;
      // Segments are visited in `items` order: fetch the token of an entry a few segments ahead
      // now, so the random reads of a level overlap instead of stalling one by one.
      if (!compacted && seg.hi + kPrefetchAhead < n) {
        const Entry& ahead = items[seg.hi + kPrefetchAhead];
        __builtin_prefetch(paths.tokens + ahead.start + std::min<int64_t>(d, ahead.len - 1));
      }
      if (size == 1) {  // the common case deep in the trie: one path, no sorting
        if (e[0].len == d) {
          const double w = weights ? weights[e[0].item] : 1.0;
          total_weight += w;
          leaves.push_back(seg);
          leaf_weight.push_back(w);
        } else {
          add_child(seg.node, d + 1, token_at(e[0], d), seg.lo, seg.hi);
        }
        continue;
      }
      // key = (token + 1, position in segment); paths that end here get token 0.
      keys.resize(size);
      for (int32_t k = 0; k < size; ++k) {
        const uint64_t tok = e[k].len == d ? 0 : static_cast<uint64_t>(token_at(e[k], d)) + 1;
        keys[k] = (tok << 32) | static_cast<uint32_t>(k);
      }
      std::sort(keys.begin(), keys.end());
      reordered += size;
      scratch.resize(size);
      for (int32_t k = 0; k < size; ++k) scratch[k] = e[keys[k] & 0xffffffffu];
      std::copy(scratch.begin(), scratch.end(), e);
      if ((keys[0] >> 32) == 0) {  // some path ends here: all must (duplicates), else a prefix
        IGD_CHECK_ARG((keys[size - 1] >> 32) == 0, "item ", e[0].item,
                      "'s token path is a prefix of item ", e[size - 1].item,
                      "'s; end every path with a terminator token (e.g. EOS)");
        double w = 0.0;
        for (int32_t k = 0; k < size; ++k) w += weights ? weights[e[k].item] : 1.0;
        total_weight += w;
        leaves.push_back(seg);
        leaf_weight.push_back(w);
        continue;
      }
      int32_t u = 0;
      while (u < size) {
        const uint64_t tok = keys[u] >> 32;
        int32_t v = u + 1;
        while (v < size && (keys[v] >> 32) == tok) ++v;
        add_child(seg.node, d + 1, static_cast<int64_t>(tok) - 1, seg.lo + u, seg.lo + v);
        u = v;
      }
    }
    std::swap(frontier, next);
  }
  const int64_t num_nodes = static_cast<int64_t>(t.token.size());
  t.child_offsets.push_back(static_cast<int32_t>(num_nodes));

  // 4. Entropies bottom-up (children have larger ids than their parent). Leaves hold one unit.
  //    The probability mass below each node is only needed for the conditional entropy.
  //    `weighted` counts the leaves of positive weight below each node, saturated at 2: it
  //    decides the zero-IG edges exactly (step 5) and the conditional entropies that are exactly
  //    0 (at most one weighted leaf below), where h / mass + log(mass) would leave a residue.
  const bool conditional = options.entropy == EntropyMode::kConditional;
  std::vector<double> h(num_nodes, 0.0), mass(conditional ? num_nodes : 0, 0.0);
  std::vector<uint8_t> weighted(num_nodes, 0);
  for (size_t k = 0; k < leaves.size(); ++k) {
    const double p = leaf_weight[k] / total_weight;
    if (conditional) mass[leaves[k].node] = p;
    h[leaves[k].node] = p > 0.0 ? -p * std::log(p) : 0.0;
    weighted[leaves[k].node] = leaf_weight[k] > 0.0 ? 1 : 0;
  }
  for (int64_t node = num_nodes - 1; node > 0; --node) {
    const int32_t up = t.parent[node];
    h[up] += h[node];
    if (conditional) mass[up] += mass[node];
    weighted[up] = static_cast<uint8_t>(std::min(2, weighted[up] + weighted[node]));
  }
  if (conditional) {
    for (int64_t node = 0; node < num_nodes; ++node) {
      const bool spread = weighted[node] > 1 && mass[node] > 0.0;
      h[node] = spread ? h[node] / mass[node] + std::log(mass[node]) : 0.0;
    }
  }

  // 5. Edge information gain, zero-IG flags and sibling-normalised IG~. An edge n -> c has zero
  //    IG when its siblings' weight sum is exactly 0 (a single child, or every other child holds
  //    only zero-weight items): decided from the weights, not by comparing float entropies, and
  //    its IG is then exactly 0, also inside IG~. The IG of an edge is recomputed from h when
  //    normalising rather than kept in a temporary array.
  t.entropy.resize(num_nodes);
  t.info_gain.assign(num_nodes, 0.0f);
  t.info_gain_norm.assign(num_nodes, 0.0f);
  t.zero_ig.assign(num_nodes, 0);
  for (int64_t node = 0; node < num_nodes; ++node) {
    t.entropy[node] = static_cast<float>(h[node]);
    const int32_t c0 = t.child_offsets[node], c1 = t.child_offsets[node + 1];
    if (c1 - c0 > t.max_fanout) t.max_fanout = c1 - c0;
    if (t.depth[node] > t.max_depth) t.max_depth = t.depth[node];
    if (c0 == c1) continue;
    if (c1 - c0 == 1) {  // a single child: zero IG
      t.zero_ig[c0] = 1;
      continue;
    }
    int32_t weighted_children = 0;
    for (int32_t c = c0; c < c1; ++c) weighted_children += weighted[c] > 0 ? 1 : 0;
    // Child c has zero-weight siblings only: no child has weight, or c is the only one that has.
    auto is_zero_ig = [&](int32_t c) {
      return weighted_children == 0 || (weighted_children == 1 && weighted[c] > 0);
    };
    auto edge_ig = [&](int32_t c) { return is_zero_ig(c) ? 0.0 : h[node] - h[c]; };
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (int32_t c = c0; c < c1; ++c) {
      const double ig = edge_ig(c);
      t.zero_ig[c] = is_zero_ig(c) ? 1 : 0;
      t.info_gain[c] = static_cast<float>(ig);
      lo = std::min(lo, ig);
      hi = std::max(hi, ig);
    }
    const double scale = std::max(std::fabs(lo), std::fabs(hi));
    if (hi - lo <= options.equal_ig_rtol * scale || hi == lo) continue;  // equal IG: all 0
    for (int32_t c = c0; c < c1; ++c) {
      t.info_gain_norm[c] = static_cast<float>((edge_ig(c) - lo) / (hi - lo));
    }
  }

  // 6. Leaves and their items (item ids ascending within a leaf).
  t.item_leaf.assign(n, -1);
  t.leaf_nodes.reserve(leaves.size());
  t.leaf_item_offsets.reserve(leaves.size() + 1);
  t.leaf_items.reserve(n);
  for (size_t k = 0; k < leaves.size(); ++k) {
    t.leaf_nodes.push_back(leaves[k].node);
    t.leaf_item_offsets.push_back(static_cast<int32_t>(t.leaf_items.size()));
    t.leaf_weight.push_back(leaf_weight[k]);
    const size_t first = t.leaf_items.size();
    for (int32_t i = leaves[k].lo; i < leaves[k].hi; ++i) {
      t.leaf_items.push_back(items[i].item);
      t.item_leaf[items[i].item] = leaves[k].node;
    }
    std::sort(t.leaf_items.begin() + first, t.leaf_items.end());
  }
  t.leaf_item_offsets.push_back(static_cast<int32_t>(t.leaf_items.size()));
  return t;
}

}  // namespace igdbeam
