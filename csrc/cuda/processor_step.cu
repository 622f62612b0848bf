// CUDA logits-processor step (spec section 4): one block per row, scores rewritten in place.
//
// Per row: thread 0 walks the generated tokens to the node; with temperature != 1 the block
// reduces the full row once for the log-softmax normaliser; with renormalize it reduces over the
// children instead (the full-row normaliser cancels out, as on the CPU). Then the row is rewritten
// tile by tile (kThreads * 16 bytes per tile): a tile without allowed tokens is filled with -inf by
// 16-byte stores, no barrier; a tile with children is staged in shared memory (own slots -inf,
// barrier, children scattered from their old global values, barrier, 16-byte stores), so every
// child is read before its tile is overwritten.
#include <cassert>

#include "cuda_check.cuh"
#include "cuda_compat.cuh"
#include "igdbeam/cuda_kernels.h"
#include "logits_load.cuh"
#include "reduce.cuh"
#include "trie_device.cuh"

namespace igdbeam::cuda {

namespace {

constexpr int kThreads = 256;

struct ProcessorArgs {
  const int64_t* input_ids;
  int64_t seq_len, ids_row_stride, prompt_len;
  int64_t vocab, scores_row_stride;
  float alpha, inv_temperature;
  bool use_temperature, renormalize, aligned;
  int64_t eos_token_id;
  int32_t* out_nodes;
  int32_t* row_status;
  NodeFilter filter;  // per-request item filters / CF scores (item_filters.h)
};

// Writes the thread's own V slots [e0, e0 + V) of the row: a 16-byte store when possible.
template <typename T>
__device__ __forceinline__ void StoreSlots(T* row, int64_t e0, int64_t vocab, bool aligned,
                                           const float (&v)[Vec<T>::kSize]) {
  constexpr int V = Vec<T>::kSize;
  if (aligned && e0 + V <= vocab) {
    StoreVec(row + e0, v);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i)
      if (e0 + i < vocab) row[e0 + i] = FromFloat<T>(v[i]);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    ProcessorStepKernel(TrieView trie, T* __restrict__ scores, ProcessorArgs a) {
  constexpr int V = Vec<T>::kSize;
  constexpr int kTile = kThreads * V;
  __shared__ __align__(16) float tile[kTile];
  __shared__ float red[64];
  __shared__ int32_t s_node;
  const int64_t r = blockIdx.x;
  T* row = scores + r * a.scores_row_stride;
  if (threadIdx.x < 32) {  // warp 0 walks the generated tokens with warp-wide child searches
    const int64_t* ids = a.input_ids + r * a.ids_row_stride;
    int32_t node = 0;
    for (int64_t i = a.prompt_len; i < a.seq_len && node >= 0; ++i)
      node = WarpFindChild(trie, node, ids[i]);
    if (threadIdx.x == 0) s_node = node;
  }
  __syncthreads();
  const int32_t node = s_node;
  const ChildRange kids = ChildrenInVocab(trie, node, a.vocab);
  const bool leaf_eos = node >= 0 && IsLeaf(trie, node) && a.eos_token_id >= 0;
  // Item filters / CF scores of this row's request (item_filters.h), or none.
  const int64_t frow = a.filter.row(r);
  const NodeMaskRow allowed = MaskRowOf(a.filter, frow);
  const float* cf =
      a.filter.has_score() ? a.filter.node_score + frow * a.filter.row_stride : nullptr;

  // Normalisers: logp(y) = x(y) / T - row_lse; renormalized: x(y) / T minus the children's
  // logsumexp, left out when that is infinite (every child -inf), as the CPU kernel does.
  float row_lse = 0.0f;
  if (a.use_temperature && !a.renormalize && kids.size() > 0) {
    MaxSum acc;
    if (a.aligned) {
      const int64_t nvec = a.vocab / V;
      for (int64_t v = threadIdx.x; v < nvec; v += kThreads) {
        float x[V];
        LoadVec<T, false>(row + v * V, x);
#pragma unroll
        for (int i = 0; i < V; ++i) x[i] *= a.inv_temperature;
        acc.AddN(x);
      }
      for (int64_t e = nvec * V + threadIdx.x; e < a.vocab; e += kThreads)
        acc.Add(LoadFloatPlain(row + e) * a.inv_temperature);
    } else {
      for (int64_t e = threadIdx.x; e < a.vocab; e += kThreads)
        acc.Add(LoadFloatPlain(row + e) * a.inv_temperature);
    }
    row_lse = BlockReduce(acc, red).Lse();
  }
  float child_lse = 0.0f;
  if (a.renormalize && kids.size() > 0) {
    MaxSum acc;
    for (int32_t c = kids.lo + threadIdx.x; c < kids.hi; c += kThreads)
      if (allowed.allowed(c))
        acc.Add(LoadFloatPlain(row + __ldg(trie.token + c)) * a.inv_temperature);
    child_lse = BlockReduce(acc, red).Lse();
    if (child_lse == INFINITY || child_lse == -INFINITY) child_lse = 0.0f;
  }
  const float shift = row_lse + child_lse;

  bool nan_seen = false;
  int32_t ca = kids.lo;
  for (int64_t t0 = 0; t0 < a.vocab; t0 += kTile) {
    const int64_t t1 = t0 + kTile < a.vocab ? t0 + kTile : a.vocab;
    const int64_t e0 = t0 + static_cast<int64_t>(threadIdx.x) * V;
    int32_t cb = ca;
    bool has = false;
    if (kids.size() > 0) {
      cb = LowerBoundToken(trie.token, ca, kids.hi, t1);
      has = cb > ca;
    } else if (leaf_eos) {
      has = a.eos_token_id >= t0 && a.eos_token_id < t1;
    }
    float v[V];
#pragma unroll
    for (int i = 0; i < V; ++i) v[i] = -INFINITY;
    if (!has) {  // uniform across the block
      StoreSlots(row, e0, a.vocab, a.aligned, v);
      continue;
    }
    float* mine = tile + threadIdx.x * V;
#pragma unroll
    for (int i = 0; i < V; i += 4)
      *reinterpret_cast<float4*>(mine + i) = make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]);
    __syncthreads();
    if (kids.size() > 0) {
      for (int32_t c = ca + threadIdx.x; c < cb; c += kThreads) {
        if (!allowed.allowed(c)) continue;  // like a non-child: stays -inf
        const int32_t tok = __ldg(trie.token + c);
        const float logp = LoadFloatPlain(row + tok) * a.inv_temperature - shift;
        const float w = 1.0f - a.alpha * __ldg(trie.info_gain_norm + c);
        // An impossible token stays impossible when its weight is 0 (0 * -inf would be NaN).
        float y = logp == -INFINITY ? -INFINITY : w * logp;
        if (cf) y = cf[c] == -INFINITY ? -INFINITY : y + a.filter.score_weight * (cf[c] - cf[node]);
        nan_seen |= (y != y);
        tile[tok - t0] = y;
      }
    } else if (threadIdx.x == 0) {
      tile[a.eos_token_id - t0] = 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < V; i += 4) {
      const float4 q = *reinterpret_cast<const float4*>(mine + i);
      v[i] = q.x;
      v[i + 1] = q.y;
      v[i + 2] = q.z;
      v[i + 3] = q.w;
    }
    StoreSlots(row, e0, a.vocab, a.aligned, v);
    ca = cb;
  }
  const bool any_nan = __syncthreads_or(nan_seen);
  if (threadIdx.x == 0) {
    a.out_nodes[r] = node;
    a.row_status[r] = node < 0 ? kRowLeftTrie : (any_nan ? kRowNan : kRowOk);
  }
}

}  // namespace

Status ProcessorStep(const TrieView& trie, const int64_t* input_ids, int64_t rows, int64_t seq_len,
                     int64_t ids_row_stride, int64_t prompt_len, void* scores, ScalarType dtype,
                     int64_t vocab, int64_t scores_row_stride, const DecodeParams& params,
                     int32_t* out_nodes, int32_t* row_status, void* stream) noexcept {
  // The shapes and the temperature were checked once (bindings, Python); debug builds assert
  // them. An empty vocabulary is this backend's own limit.
  assert(rows >= 0 && seq_len >= 0 && prompt_len >= 0 && prompt_len <= seq_len);
  assert(params.temperature > 0.0f);
  IGD_CUDA_CHECK_ARG(vocab > 0, "the CUDA processor step needs vocab >= 1, got ", vocab);
  if (rows == 0) return OkStatus();
  ProcessorArgs a;
  a.input_ids = input_ids;
  a.seq_len = seq_len;
  a.ids_row_stride = ids_row_stride;
  a.prompt_len = prompt_len;
  a.vocab = vocab;
  a.scores_row_stride = scores_row_stride;
  a.alpha = params.alpha;
  a.inv_temperature = 1.0f / params.temperature;
  a.use_temperature = params.temperature != 1.0f;
  a.renormalize = params.renormalize;
  a.aligned = RowsAligned16(scores, scores_row_stride, ElementSize(dtype));
  a.eos_token_id = params.eos_token_id;
  a.out_nodes = out_nodes;
  a.row_status = row_status;
  a.filter = params.filter;
  IGD_DISPATCH_FLOAT_TYPES(dtype, {
    IGD_LAUNCH(ProcessorStepKernel<scalar_t>, static_cast<unsigned>(rows), kThreads, 0,
               AsStream(stream))(trie, static_cast<scalar_t*>(scores), a);
  });
  IGD_CUDA_CHECK_LAUNCH();
  return OkStatus();
}

}  // namespace igdbeam::cuda
