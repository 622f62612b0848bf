// Builds the CSR item trie from token paths: sort, merge duplicates, split breadth-first,
// then entropies bottom-up and information gains top-down.
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
  return v;
}

namespace {

struct PathSpan {
  const int64_t* begin;
  int64_t size;
  int64_t operator[](int64_t i) const { return begin[i]; }
};

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
      IGD_CHECK_ARG(options.vocab_size <= 0 || t < options.vocab_size, "item ", i,
                    " has token id ", t, " at position ", k - paths.offsets[i],
                    ", outside the vocabulary [0, ", options.vocab_size, ")");
    }
  }
  IGD_CHECK_ARG(paths.offsets[paths.num_items] < std::numeric_limits<int32_t>::max(),
                "the catalog holds more than 2^31 tokens, the limit of 32-bit node ids");
  if (weights != nullptr) {
    double total = 0.0;
    for (int64_t i = 0; i < paths.num_items; ++i) {
      IGD_CHECK_ARG(std::isfinite(weights[i]) && weights[i] >= 0.0, "item ", i,
                    " has weight ", weights[i], "; weights must be finite and >= 0");
      total += weights[i];
    }
    IGD_CHECK_ARG(total > 0.0, "the item weights sum to 0; at least one item needs weight > 0");
  }
}

bool IsStrictPrefix(const PathSpan& a, const PathSpan& b) {
  return a.size < b.size && std::equal(a.begin, a.begin + a.size, b.begin);
}

bool SamePath(const PathSpan& a, const PathSpan& b) {
  return a.size == b.size && std::equal(a.begin, a.begin + a.size, b.begin);
}

}  // namespace

TrieArrays BuildTrie(const TokenPaths& paths, const double* weights, const BuildOptions& options) {
  ValidateInputs(paths, weights, options);
  const int64_t n = paths.num_items;
  auto span = [&](int64_t item) {
    return PathSpan{paths.tokens + paths.offsets[item], paths.offsets[item + 1] - paths.offsets[item]};
  };

  // 1. Sort items by path; equal paths become neighbours, and a path that is a prefix of another
  //    sits right before one of its extensions.
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    const PathSpan sa = span(a), sb = span(b);
    const bool less = std::lexicographical_compare(sa.begin, sa.begin + sa.size, sb.begin,
                                                   sb.begin + sb.size);
    if (less) return true;
    if (SamePath(sa, sb)) return a < b;
    return false;
  });

  // 2. Merge duplicates into units (future leaves); weights add up.
  std::vector<int64_t> unit_item_begin;  // index into `order`
  std::vector<double> unit_weight;
  unit_item_begin.reserve(n + 1);
  unit_weight.reserve(n);
  double total_weight = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    const double w = weights ? weights[order[k]] : 1.0;
    total_weight += w;
    if (k > 0 && SamePath(span(order[k - 1]), span(order[k]))) {
      unit_weight.back() += w;
      continue;
    }
    if (k > 0) {
      IGD_CHECK_ARG(!IsStrictPrefix(span(order[k - 1]), span(order[k])), "item ", order[k - 1],
                    "'s token path is a prefix of item ", order[k],
                    "'s; end every path with a terminator token (e.g. EOS)");
    }
    unit_item_begin.push_back(k);
    unit_weight.push_back(w);
  }
  const int64_t units = static_cast<int64_t>(unit_weight.size());
  unit_item_begin.push_back(n);
  auto unit_path = [&](int64_t u) { return span(order[unit_item_begin[u]]); };

  // 3. Breadth-first split. Each node covers a contiguous range of units.
  TrieArrays t;
  const int64_t reserve = paths.offsets[n] + 1;
  t.token.reserve(reserve);
  t.parent.reserve(reserve);
  t.depth.reserve(reserve);
  std::vector<int32_t> range_lo, range_hi;
  range_lo.reserve(reserve);
  range_hi.reserve(reserve);
  t.token.push_back(-1);
  t.parent.push_back(-1);
  t.depth.push_back(0);
  range_lo.push_back(0);
  range_hi.push_back(static_cast<int32_t>(units));
  t.child_offsets.reserve(reserve + 1);

  for (int64_t node = 0; node < static_cast<int64_t>(t.token.size()); ++node) {
    t.child_offsets.push_back(static_cast<int32_t>(t.token.size()));
    const int64_t d = t.depth[node];
    const int32_t lo = range_lo[node], hi = range_hi[node];
    if (unit_path(lo).size == d) continue;  // a leaf: exactly one unit ends here
    int32_t u = lo;
    while (u < hi) {
      const int64_t tok = unit_path(u)[d];
      int32_t v = u + 1;
      while (v < hi && unit_path(v)[d] == tok) ++v;
      t.token.push_back(static_cast<int32_t>(tok));
      t.parent.push_back(static_cast<int32_t>(node));
      t.depth.push_back(static_cast<uint16_t>(d + 1));
      range_lo.push_back(u);
      range_hi.push_back(v);
      u = v;
    }
  }
  const int64_t num_nodes = static_cast<int64_t>(t.token.size());
  t.child_offsets.push_back(static_cast<int32_t>(num_nodes));

  // 4. Entropies bottom-up (children have larger ids than their parent). Leaves hold one unit.
  std::vector<double> h(num_nodes, 0.0), mass(num_nodes, 0.0);
  for (int64_t node = num_nodes - 1; node >= 0; --node) {
    if (t.child_offsets[node] == t.child_offsets[node + 1]) {
      const double p = unit_weight[range_lo[node]] / total_weight;
      mass[node] = p;
      h[node] = p > 0.0 ? -p * std::log(p) : 0.0;
    }
    if (node > 0) {
      h[t.parent[node]] += h[node];
      mass[t.parent[node]] += mass[node];
    }
  }
  if (options.entropy == EntropyMode::kConditional) {
    for (int64_t node = 0; node < num_nodes; ++node) {
      h[node] = mass[node] > 0.0 ? h[node] / mass[node] + std::log(mass[node]) : 0.0;
    }
  }

  // 5. Edge information gain, structural zero-IG flags and sibling-normalised IG~.
  t.entropy.resize(num_nodes);
  t.info_gain.assign(num_nodes, 0.0f);
  t.info_gain_norm.assign(num_nodes, 0.0f);
  t.zero_ig.assign(num_nodes, 0);
  std::vector<double> ig(num_nodes, 0.0);
  for (int64_t node = 0; node < num_nodes; ++node) {
    t.entropy[node] = static_cast<float>(h[node]);
    const int32_t c0 = t.child_offsets[node], c1 = t.child_offsets[node + 1];
    if (c1 - c0 > t.max_fanout) t.max_fanout = c1 - c0;
    if (t.depth[node] > t.max_depth) t.max_depth = t.depth[node];
    if (c0 == c1) continue;
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (int32_t c = c0; c < c1; ++c) {
      ig[c] = (c1 - c0 == 1) ? 0.0 : h[node] - h[c];
      t.info_gain[c] = static_cast<float>(ig[c]);
      t.zero_ig[c] = (c1 - c0 == 1) ? 1 : 0;
      lo = std::min(lo, ig[c]);
      hi = std::max(hi, ig[c]);
    }
    const double scale = std::max(std::fabs(lo), std::fabs(hi));
    if (hi - lo <= options.equal_ig_rtol * scale || hi == lo) continue;  // equal IG: all 0
    for (int32_t c = c0; c < c1; ++c) {
      t.info_gain_norm[c] = static_cast<float>((ig[c] - lo) / (hi - lo));
    }
  }

  // 6. Leaves and their items.
  t.item_leaf.assign(n, -1);
  for (int64_t node = 0; node < num_nodes; ++node) {
    if (t.child_offsets[node] != t.child_offsets[node + 1]) continue;
    const int32_t u = range_lo[node];
    t.leaf_nodes.push_back(static_cast<int32_t>(node));
    t.leaf_item_offsets.push_back(static_cast<int32_t>(t.leaf_items.size()));
    t.leaf_weight.push_back(unit_weight[u]);
    for (int64_t k = unit_item_begin[u]; k < unit_item_begin[u + 1]; ++k) {
      t.leaf_items.push_back(order[k]);  // ascending: the sort breaks ties by item id
      t.item_leaf[order[k]] = static_cast<int32_t>(node);
    }
  }
  t.leaf_item_offsets.push_back(static_cast<int32_t>(t.leaf_items.size()));
  return t;
}

}  // namespace igdbeam
