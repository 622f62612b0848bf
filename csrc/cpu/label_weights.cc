// CPU label token weights (spec section 3): walk each row's completion from the trie root.
#include <algorithm>
#include <cassert>
#include <thread>
#include <vector>

#include "igdbeam/kernels.h"
#include "igdbeam/trie_lookup.h"

namespace igdbeam {

namespace {

// Returns the first position >= i whose label is not ignore_index, or cols. Prompt and padding
// are long runs of ignore_index, so blocks of 8 are tested at once (vectorised compares).
inline int64_t NextLabel(const int64_t* row, int64_t i, int64_t cols, int64_t ignore_index) {
  constexpr int64_t kBlock = 8;
  for (; i + kBlock <= cols; i += kBlock) {
    bool all_ignored = true;
    for (int64_t k = 0; k < kBlock; ++k) all_ignored &= row[i + k] == ignore_index;
    if (!all_ignored) break;
  }
  while (i < cols && row[i] == ignore_index) ++i;
  return i;
}

// Processes one row; outputs are the row's slices (contiguous, `cols` long).
void LabelWeightsRow(const TrieView& trie, const int64_t* row, int64_t cols, int64_t ignore_index,
                     float beta, OffTriePolicy policy, float* info_gain, uint8_t* zero_ig,
                     float* weight, int32_t* status) {
  // Most positions are prompt or padding: clear the outputs with vectorised fills, then visit
  // only the completion tokens.
  std::fill(info_gain, info_gain + cols, 0.0f);
  std::fill(zero_ig, zero_ig + cols, uint8_t{0});
  std::fill(weight, weight + cols, 0.0f);
  int32_t node = 0;
  int64_t i = NextLabel(row, 0, cols, ignore_index);
  for (; i < cols; i = NextLabel(row, i + 1, cols, ignore_index)) {
    const int32_t child = FindChild(trie, node, row[i]);
    if (child < 0) break;  // also covers tokens after a leaf: a leaf has no children
    node = child;
    const uint8_t zero = trie.zero_ig[node];
    info_gain[i] = trie.info_gain[node];
    zero_ig[i] = zero;
    weight[i] = zero ? beta : 1.0f;
  }
  if (i == cols) {
    *status = kRowOk;
    return;
  }
  // The row left the trie: its IG values are meaningless, so every completion token gets the
  // policy's weight and IG / zero-IG flags are cleared.
  *status = kRowLeftTrie;
  const float off_weight = policy == OffTriePolicy::kUniform ? beta : 0.0f;
  for (int64_t j = 0; j < cols; ++j) {
    info_gain[j] = 0.0f;
    zero_ig[j] = 0;
    weight[j] = row[j] == ignore_index ? 0.0f : off_weight;
  }
}

}  // namespace

void LabelWeights(const TrieView& trie, const int64_t* labels, int64_t rows, int64_t cols,
                  int64_t row_stride, int64_t ignore_index, float beta, OffTriePolicy policy,
                  const LabelWeightsOutput& out) {
  // The bindings checked the shape and the policy once (debug builds assert them). The labels
  // are only compared with trie tokens (never used as indices), so any value is safe.
  assert(trie.num_nodes >= 1 && rows >= 0 && cols >= 0 && row_stride >= 0);
  assert(policy == OffTriePolicy::kError || policy == OffTriePolicy::kUniform ||
         policy == OffTriePolicy::kIgnore);
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      LabelWeightsRow(trie, labels + r * row_stride, cols, ignore_index, beta, policy,
                      out.info_gain + r * cols, out.zero_ig + r * cols, out.weight + r * cols,
                      out.row_status + r);
    }
  };
  // Rows are independent. Threads only pay off for large batches (a 16 x 512 batch takes a few
  // microseconds on one core), so small inputs stay on the calling thread.
  constexpr int64_t kMinElementsPerThread = int64_t{1} << 20;
  const int64_t wanted = std::min(rows, rows * cols / kMinElementsPerThread);
  if (wanted <= 1) {
    run(0, rows);
    return;
  }
  // hardware_concurrency() reads sysfs on Linux (tens of microseconds): query it once.
  static const int64_t hw = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t threads = std::min(hw, wanted);
  if (threads <= 1) {
    run(0, rows);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t chunk = (rows + threads - 1) / threads;
  for (int64_t t = 1; t < threads; ++t) {
    const int64_t begin = t * chunk;
    const int64_t end = std::min(rows, begin + chunk);
    if (begin < end) pool.emplace_back(run, begin, end);
  }
  run(0, std::min(rows, chunk));
  for (auto& th : pool) th.join();
}

}  // namespace igdbeam
