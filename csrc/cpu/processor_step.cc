// CPU logits-processor step of IGD decoding (spec section 4): one call rewrites the scores of
// every beam in place.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <vector>

#include "decode_common.h"
#include "igdbeam/errors.h"
#include "igdbeam/kernels.h"
#include "igdbeam/trie_lookup.h"

namespace igdbeam {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// log(sum exp(values)) over a short list; -inf when every value is -inf.
float ListLogSumExp(const std::vector<float>& values) {
  float m = kNegInf;
  for (float v : values) m = v > m ? v : m;
  if (!std::isfinite(m)) return m;
  double total = 0.0;
  for (float v : values) total += std::exp(static_cast<double>(v) - m);
  return static_cast<float>(m + std::log(total));
}

template <ScalarType kType>
void ProcessorStepTyped(const TrieView& trie, const int64_t* input_ids, int64_t rows,
                        int64_t seq_len, int64_t ids_row_stride, int64_t prompt_len, void* scores,
                        int64_t vocab, int64_t scores_row_stride, const DecodeParams& params,
                        int32_t* out_nodes, int32_t* row_status) {
  using S = cpu::Scalar<kType>;
  using Storage = typename S::Storage;
  const Storage neg_inf = S::Store(kNegInf);
  const float scale = 1.0f / params.temperature;
  const bool tempered = params.temperature != 1.0f;
  std::vector<float> child_logp;
  const NodeFilter& filter = params.filter;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t* ids = input_ids + r * ids_row_stride;
    Storage* row = static_cast<Storage*>(scores) + r * scores_row_stride;
    int32_t node = 0;
    for (int64_t i = prompt_len; i < seq_len && node >= 0; ++i)
      node = FindChild(trie, node, ids[i]);
    out_nodes[r] = node;
    row_status[r] = kRowOk;
    if (node < 0) {
      cpu::FillRow(row, vocab, neg_inf);
      row_status[r] = kRowLeftTrie;
      continue;
    }
    const int32_t lo = trie.child_offsets[node];
    const int32_t hi = trie.child_offsets[node + 1];
    if (lo == hi) {  // a leaf: the item is complete, only the terminator may follow
      cpu::FillRow(row, vocab, neg_inf);
      if (params.eos_token_id >= 0 && params.eos_token_id < vocab) {
        row[params.eos_token_id] = S::Store(0.0f);
      }
      continue;
    }
    // Full-row log-softmax only when the temperature changes the distribution and the
    // renormalisation over the children would not cancel it anyway.
    float log_norm = 0.0f;
    if (tempered && !params.renormalize) {
      log_norm = static_cast<float>(cpu::RowLogSumExp<kType>(row, vocab, scale));
    }
    child_logp.resize(static_cast<size_t>(hi - lo));
    bool has_nan = false;
    // Item filters / CF scores of this row's request (item_filters.h), or none.
    const int64_t frow = filter.row(r);
    const NodeMaskRow allowed = MaskRowOf(filter, frow);
    const float* cf = filter.has_score() ? filter.node_score + frow * filter.row_stride : nullptr;
    for (int32_t c = lo; c < hi; ++c) {
      const int64_t tok = trie.token[c];
      // A negative trie token would index before the row: refuse it before the row is touched.
      IGD_CHECK_ARG(tok >= 0, "trie node ", c, " holds the negative token id ", tok,
                    "; the trie is corrupt (validate it with ItemTrie.validate())");
      float v = tok < vocab && allowed.allowed(c) ? S::Load(row[tok]) : kNegInf;
      has_nan |= std::isnan(v);
      if (tempered) v = v * scale - log_norm;
      child_logp[c - lo] = v;
    }
    if (params.renormalize) {
      const float child_norm = ListLogSumExp(child_logp);
      if (std::isfinite(child_norm)) {
        for (float& v : child_logp) v -= child_norm;
      }
    }
    // Few children: stream the -inf fill past the cache. Many: keep the row cached for the
    // scattered child writes that follow.
    if (static_cast<int64_t>(hi - lo) * 256 < vocab) {
      cpu::FillRow(row, vocab, neg_inf);
    } else {
      std::fill(row, row + vocab, neg_inf);
    }
    for (int32_t c = lo; c < hi; ++c) {
      const int64_t tok = trie.token[c];
      if (tok >= vocab) continue;
      const float logp = child_logp[c - lo];
      const float w = 1.0f - params.alpha * trie.info_gain_norm[c];
      // An impossible token stays impossible even when its weight is 0.
      float y = logp == kNegInf ? kNegInf : w * logp;
      if (cf) y = cf[c] == kNegInf ? kNegInf : y + filter.score_weight * (cf[c] - cf[node]);
      row[tok] = S::Store(y);
    }
    if (has_nan) row_status[r] = kRowNan;
  }
}

}  // namespace

void ProcessorStep(const TrieView& trie, const int64_t* input_ids, int64_t rows, int64_t seq_len,
                   int64_t ids_row_stride, int64_t prompt_len, void* scores, ScalarType dtype,
                   int64_t vocab, int64_t scores_row_stride, const DecodeParams& params,
                   int32_t* out_nodes, int32_t* row_status) {
  // The bindings checked the arguments once (shapes, prompt length; Python the temperature);
  // debug builds assert that contract. Input ids are only compared with trie tokens (any value is
  // safe); trie tokens are checked as the children are visited.
  assert(trie.num_nodes >= 1 && rows >= 0 && seq_len >= 0 && vocab >= 0 && ids_row_stride >= 0);
  assert(prompt_len >= 0 && prompt_len <= seq_len);
  assert(params.temperature > 0.0f && std::isfinite(params.temperature));
  switch (dtype) {
    case ScalarType::kFloat32:
      ProcessorStepTyped<ScalarType::kFloat32>(trie, input_ids, rows, seq_len, ids_row_stride,
                                               prompt_len, scores, vocab, scores_row_stride, params,
                                               out_nodes, row_status);
      break;
    case ScalarType::kBFloat16:
      ProcessorStepTyped<ScalarType::kBFloat16>(trie, input_ids, rows, seq_len, ids_row_stride,
                                                prompt_len, scores, vocab, scores_row_stride,
                                                params, out_nodes, row_status);
      break;
    case ScalarType::kFloat16:
      ProcessorStepTyped<ScalarType::kFloat16>(trie, input_ids, rows, seq_len, ids_row_stride,
                                               prompt_len, scores, vocab, scores_row_stride, params,
                                               out_nodes, row_status);
      break;
    default:
      IGD_CHECK_ARG(false, "unsupported score dtype code ", static_cast<int>(dtype));
  }
}

}  // namespace igdbeam
