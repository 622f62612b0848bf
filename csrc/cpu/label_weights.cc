// CPU label token weights (spec section 3): walk each row's completion from the trie root.
#include <algorithm>
#include <thread>
#include <vector>

#include "igdbeam/kernels.h"
#include "igdbeam/trie_lookup.h"

namespace igdbeam {

namespace {

// Processes one row; outputs are the row's slices (contiguous, `cols` long).
void LabelWeightsRow(const TrieView& trie, const int64_t* row, int64_t cols, int64_t ignore_index,
                     float beta, OffTriePolicy policy, float* info_gain, uint8_t* zero_ig,
                     float* weight, int32_t* status) {
  int32_t node = 0;
  bool left = false;
  for (int64_t i = 0; i < cols; ++i) {
    const int64_t label = row[i];
    info_gain[i] = 0.0f;
    zero_ig[i] = 0;
    weight[i] = 0.0f;
    if (label == ignore_index || left) continue;
    const int32_t child = FindChild(trie, node, label);
    if (child < 0) {  // also covers tokens after a leaf: a leaf has no children
      left = true;
      continue;
    }
    node = child;
    info_gain[i] = trie.info_gain[node];
    zero_ig[i] = trie.zero_ig[node];
    weight[i] = trie.zero_ig[node] ? beta : 1.0f;
  }
  *status = left ? kRowLeftTrie : kRowOk;
  if (!left) return;
  // The row left the trie: its IG values are meaningless, so every completion token gets the
  // policy's weight and IG / zero-IG flags are cleared.
  const float off_weight = policy == OffTriePolicy::kUniform ? beta : 0.0f;
  for (int64_t i = 0; i < cols; ++i) {
    info_gain[i] = 0.0f;
    zero_ig[i] = 0;
    weight[i] = row[i] == ignore_index ? 0.0f : off_weight;
  }
}

}  // namespace

void LabelWeights(const TrieView& trie, const int64_t* labels, int64_t rows, int64_t cols,
                  int64_t row_stride, int64_t ignore_index, float beta, OffTriePolicy policy,
                  const LabelWeightsOutput& out) {
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
  const int64_t hw = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t threads =
      std::min({hw, rows, std::max<int64_t>(1, rows * cols / kMinElementsPerThread)});
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
