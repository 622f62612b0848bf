// CUDA build of the per-node item filter arrays (item_filters.h), without host synchronisation:
//  1. LevelStartsKernel: the first node of every depth level (breadth-first numbering keeps each
//     level contiguous and depth non-decreasing), into a small scratch array;
//  2. the leaves: every (group of 64 rows, leaf) ORs its items' mask bits (transposed into one
//     word per item and group by ItemBitsKernel), every (row, leaf) takes the log-sum-exp of its
//     items' scores;
//  3. once per level from max_depth - 1 up to the root: every (group, inner node) ORs its
//     children's words, every (row, inner node) takes the log-sum-exp of its children's scores,
//     which the previous launch (or the leaf kernels) finished.
// Launches on one stream run in order, so no grid-wide barrier is needed. The level kernels'
// grids are sized from static facts only (rows, num_nodes, the SM count) and stride over the
// level, whose bounds they read from the device.
#include <cassert>

#include "cuda_check.cuh"
#include "cuda_compat.cuh"
#include "igdbeam/cuda_item_filters.h"

namespace igdbeam::cuda {

namespace {

constexpr int kThreads = 256;

// Calls fn(t) for every t in [0, total), the grid's threads striding over the range.
template <typename Fn>
__device__ __forceinline__ void GridStride(int64_t total, Fn fn) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += stride)
    fn(t);
}

// log(sum_j exp(score(j))) over j in [lo, hi), where score(j) is -inf for a left-out term: -inf
// when every term is, and exactly the one score when one term (or only one allowed) is left.
template <typename Score>
__device__ __forceinline__ float LogSumExp(int32_t lo, int32_t hi, Score score) {
  float m = -INFINITY;
  for (int32_t j = lo; j < hi; ++j) m = fmaxf(m, score(j));
  if (m == -INFINITY || hi - lo <= 1) return m;
  float total_exp = 0.0f;
  for (int32_t j = lo; j < hi; ++j) total_exp += expf(score(j) - m);
  return m + logf(total_exp);
}

// Calls fn(r, v, lo, hi) for every (row r < rows, inner node v of level d) with its children
// [lo, hi); leaves are skipped (the leaf kernels write them).
template <typename Fn>
__device__ __forceinline__ void ForEachInnerNode(const TrieView& trie, const int32_t* level_start,
                                                 int32_t d, int64_t rows, Fn fn) {
  const int64_t first = level_start[d];
  const int64_t size = level_start[d + 1] - first;
  GridStride(rows * size, [&](int64_t t) {
    const int64_t r = t / size;
    const int64_t v = first + (t - r * size);
    const int32_t lo = __ldg(trie.child_offsets + v);
    const int32_t hi = __ldg(trie.child_offsets + v + 1);
    if (lo != hi) fn(r, v, lo, hi);
  });
}

__global__ void __launch_bounds__(kThreads)
    LevelStartsKernel(TrieView trie, int32_t max_depth, int32_t* __restrict__ level_start) {
  const int64_t n = trie.num_nodes;
  GridStride(n, [&](int64_t v) {
    const int32_t d = __ldg(trie.depth + v);
    const int32_t prev = v == 0 ? -1 : static_cast<int32_t>(__ldg(trie.depth + v - 1));
    for (int32_t e = prev + 1; e <= d && e <= max_depth + 1; ++e) level_start[e] = v;
    if (v == n - 1) {  // levels past the deepest node start (empty) at num_nodes
      for (int32_t e = d + 1; e <= max_depth + 1; ++e) level_start[e] = n;
    }
  });
}

// Every (group of 64 rows, item): the item's mask bits, bit k for row 64 g + k.
__global__ void __launch_bounds__(kThreads)
    ItemBitsKernel(int64_t rows, int64_t num_items, ItemInputs in, uint64_t* __restrict__ bits) {
  const int64_t groups = (rows + 63) / 64;
  GridStride(groups * num_items, [&](int64_t t) {
    const int64_t g = t / num_items;
    const int64_t i = t - g * num_items;
    const int64_t nr = rows - 64 * g < 64 ? rows - 64 * g : 64;
    uint64_t word = 0;
    for (int64_t k = 0; k < nr; ++k)
      word |= static_cast<uint64_t>(in.item_mask[(64 * g + k) * in.mask_row_stride + i] != 0) << k;
    bits[t] = word;
  });
}

// Every (group, leaf): the OR of its items' bits (all of the group's rows without a mask).
__global__ void __launch_bounds__(kThreads)
    LeafMaskKernel(int64_t num_nodes, LeafView leaves, int64_t rows,
                   const uint64_t* __restrict__ item_bits, uint64_t* __restrict__ words) {
  const int64_t groups = (rows + 63) / 64;
  GridStride(groups * leaves.num_leaves, [&](int64_t t) {
    const int64_t g = t / leaves.num_leaves;
    const int64_t l = t - g * leaves.num_leaves;
    const int64_t nr = rows - 64 * g < 64 ? rows - 64 * g : 64;
    uint64_t any = nr == 64 ? ~0ull : (1ull << nr) - 1;
    if (item_bits) {
      const uint64_t* row = item_bits + g * leaves.num_items;
      any = 0;
      const int32_t hi = __ldg(leaves.leaf_item_offsets + l + 1);
      for (int32_t j = __ldg(leaves.leaf_item_offsets + l); j < hi; ++j)
        any |= row[__ldg(leaves.leaf_items + j)];
    }
    words[g * num_nodes + __ldg(leaves.leaf_nodes + l)] = any;
  });
}

// Every (row, leaf): the log-sum-exp of the allowed items' scores.
__global__ void __launch_bounds__(kThreads)
    LeafScoreKernel(int64_t num_nodes, LeafView leaves, int64_t rows, ItemInputs in,
                    float* __restrict__ node_score) {
  GridStride(rows * leaves.num_leaves, [&](int64_t t) {
    const int64_t r = t / leaves.num_leaves;
    const int64_t l = t - r * leaves.num_leaves;
    const uint8_t* item_mask = in.item_mask ? in.item_mask + r * in.mask_row_stride : nullptr;
    const float* item_score = in.item_scores + r * in.scores_row_stride;
    const int32_t lo = __ldg(leaves.leaf_item_offsets + l);
    const int32_t hi = __ldg(leaves.leaf_item_offsets + l + 1);
    node_score[r * num_nodes + __ldg(leaves.leaf_nodes + l)] = LogSumExp(lo, hi, [&](int32_t j) {
      const int32_t it = __ldg(leaves.leaf_items + j);
      return !item_mask || item_mask[it] ? item_score[it] : -INFINITY;
    });
  });
}

// Every (group, inner node) of level d: the OR of the children's words.
__global__ void __launch_bounds__(kThreads)
    LevelMaskKernel(TrieView trie, const int32_t* __restrict__ level_start, int32_t d,
                    int64_t groups, uint64_t* __restrict__ words) {
  const int64_t n = trie.num_nodes;
  ForEachInnerNode(trie, level_start, d, groups, [&](int64_t g, int64_t v, int32_t lo, int32_t hi) {
    const uint64_t* row = words + g * n;
    uint64_t any = 0;
    for (int32_t c = lo; c < hi; ++c) any |= row[c];
    words[g * n + v] = any;
  });
}

// Every (row, inner node) of level d: the log-sum-exp of the children's scores.
__global__ void __launch_bounds__(kThreads)
    LevelScoreKernel(TrieView trie, const int32_t* __restrict__ level_start, int32_t d,
                     int64_t rows, float* __restrict__ node_score) {
  const int64_t n = trie.num_nodes;
  ForEachInnerNode(trie, level_start, d, rows, [&](int64_t r, int64_t v, int32_t lo, int32_t hi) {
    const float* score = node_score + r * n;
    node_score[r * n + v] = LogSumExp(lo, hi, [&](int32_t c) { return score[c]; });
  });
}

// An empty catalog: nothing lies below any node.
__global__ void __launch_bounds__(kThreads)
    FillEmptyKernel(int64_t mask_words, int64_t scores, NodeFilterOutput out) {
  GridStride(mask_words > scores ? mask_words : scores, [&](int64_t i) {
    if (out.node_mask && i < mask_words) out.node_mask[i] = 0;
    if (out.node_score && i < scores) out.node_score[i] = -INFINITY;
  });
}

// Blocks of a grid-stride launch over `total` items: enough to fill the device a few times.
Status GridBlocks(int64_t total, unsigned* out) noexcept {
  int device = 0;
  IGD_CUDA_CHECK(cudaGetDevice(&device));
  int sm_count = 1;
  IGD_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  const int64_t cap = static_cast<int64_t>(sm_count > 0 ? sm_count : 1) * 8;
  int64_t blocks = CeilDiv(total, kThreads);
  if (blocks > cap) blocks = cap;
  *out = static_cast<unsigned>(blocks > 0 ? blocks : 1);
  return OkStatus();
}

// Launches level_kernel(trie, level_start, d, rows, out) once per level from max_depth - 1 up to
// the root, each level after the one below it (launches on one stream run in order).
template <typename Out>
Status LaunchLevelsUp(void (*level_kernel)(TrieView, const int32_t*, int32_t, int64_t, Out*),
                      const TrieView& trie, const int32_t* level_start, int32_t max_depth,
                      int64_t rows, Out* out, cudaStream_t s) noexcept {
  unsigned grid = 1;
  IGD_RETURN_IF_ERROR(GridBlocks(rows * trie.num_nodes, &grid));
  for (int32_t d = max_depth - 1; d >= 0; --d) {
    IGD_LAUNCH(level_kernel, grid, kThreads, 0, s)(trie, level_start, d, rows, out);
    IGD_CUDA_CHECK_LAUNCH();
  }
  return OkStatus();
}

}  // namespace

Status BuildNodeFilters(const TrieView& trie, const LeafView& leaves, int64_t rows,
                        int32_t max_depth, const ItemInputs& in, const NodeFilterOutput& out,
                        void* stream) noexcept {
  // The bindings checked the arguments once (bindings/bind_filters.cc); debug builds assert them.
  assert(trie.num_nodes >= 1 && rows >= 0 && max_depth >= 0 && max_depth < 65536);
  assert(leaves.num_leaves >= 0 && leaves.num_items >= 0);
  assert(in.mask_row_stride >= 0 && in.scores_row_stride >= 0);
  assert(out.node_score == nullptr || in.item_scores != nullptr);
  if (rows == 0 || (out.node_mask == nullptr && out.node_score == nullptr)) return OkStatus();
  cudaStream_t s = AsStream(stream);
  const int64_t n = trie.num_nodes;
  const int64_t groups = (rows + 63) / 64;
  unsigned grid = 1;
  if (leaves.num_leaves == 0) {
    const int64_t mask_words = out.node_mask ? groups * n : 0;
    const int64_t scores = out.node_score ? rows * n : 0;
    IGD_RETURN_IF_ERROR(GridBlocks(mask_words > scores ? mask_words : scores, &grid));
    IGD_LAUNCH(FillEmptyKernel, grid, kThreads, 0, s)(mask_words, scores, out);
    IGD_CUDA_CHECK_LAUNCH();
    return OkStatus();
  }
  // One scratch allocation: the level starts, then (with an item mask) the item bits.
  const size_t starts_bytes =
      (static_cast<size_t>(max_depth + 2) * sizeof(int32_t) + 255) / 256 * 256;
  const bool item_bits_used = out.node_mask != nullptr && in.item_mask != nullptr;
  const size_t bits_bytes =
      item_bits_used ? static_cast<size_t>(groups * leaves.num_items) * sizeof(uint64_t) : 0;
  void* scratch = nullptr;
  IGD_CUDA_CHECK(cudaMallocAsync(&scratch, starts_bytes + bits_bytes, s));
  int32_t* level_start = static_cast<int32_t*>(scratch);
  uint64_t* item_bits =
      item_bits_used
          ? reinterpret_cast<uint64_t*>(static_cast<unsigned char*>(scratch) + starts_bytes)
          : nullptr;
  const Status launched = [&]() noexcept -> Status {
    IGD_RETURN_IF_ERROR(GridBlocks(n, &grid));
    IGD_LAUNCH(LevelStartsKernel, grid, kThreads, 0, s)(trie, max_depth, level_start);
    IGD_CUDA_CHECK_LAUNCH();
    if (out.node_mask) {
      if (item_bits) {
        IGD_RETURN_IF_ERROR(GridBlocks(groups * leaves.num_items, &grid));
        IGD_LAUNCH(ItemBitsKernel, grid, kThreads, 0, s)(rows, leaves.num_items, in, item_bits);
        IGD_CUDA_CHECK_LAUNCH();
      }
      IGD_RETURN_IF_ERROR(GridBlocks(groups * leaves.num_leaves, &grid));
      IGD_LAUNCH(LeafMaskKernel, grid, kThreads, 0, s)(n, leaves, rows, item_bits, out.node_mask);
      IGD_CUDA_CHECK_LAUNCH();
      IGD_RETURN_IF_ERROR(
          LaunchLevelsUp(LevelMaskKernel, trie, level_start, max_depth, groups, out.node_mask, s));
    }
    if (out.node_score) {
      IGD_RETURN_IF_ERROR(GridBlocks(rows * leaves.num_leaves, &grid));
      IGD_LAUNCH(LeafScoreKernel, grid, kThreads, 0, s)(n, leaves, rows, in, out.node_score);
      IGD_CUDA_CHECK_LAUNCH();
      IGD_RETURN_IF_ERROR(
          LaunchLevelsUp(LevelScoreKernel, trie, level_start, max_depth, rows, out.node_score, s));
    }
    return OkStatus();
  }();
  const cudaError_t freed = cudaFreeAsync(scratch, s);
  if (!launched.ok()) return launched;
  IGD_CUDA_CHECK(freed);
  return OkStatus();
}

}  // namespace igdbeam::cuda
