// CPU fused beam step of igdbeam.decoding.generate: log-softmax normalisation, gather of each
// beam's trie children, IG reweighting, per-batch-row top-C and node advance in one pass.
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

struct Candidate {
  float key;  // score with NaN mapped to -inf, so that the ordering stays a strict weak order
  float score;
  float logp;
  int32_t beam;
  int32_t token;
  int32_t node;
};

// Score descending, ties by (beam, token) ascending.
bool Before(const Candidate& a, const Candidate& b) {
  if (a.key != b.key) return a.key > b.key;
  if (a.beam != b.beam) return a.beam < b.beam;
  return a.token < b.token;
}

template <ScalarType kType>
void BeamStepTyped(const TrieView& trie, const void* logits, int64_t batch, int64_t beams,
                   int64_t vocab, int64_t logits_row_stride, const float* beam_scores,
                   const int32_t* nodes, const DecodeParams& params, int64_t num_candidates,
                   const BeamStepOutput& out) {
  using S = cpu::Scalar<kType>;
  using Storage = typename S::Storage;
  const float scale = 1.0f / params.temperature;
  std::vector<Candidate> cands;
  std::vector<float> child_logp;
  const NodeFilter& filter = params.filter;
  for (int64_t b = 0; b < batch; ++b) {
    cands.clear();
    // Item filters / CF scores of this batch row's request (item_filters.h), or none.
    const int64_t frow = filter.row(b);
    const NodeMaskRow allowed = MaskRowOf(filter, frow);
    const float* cf = filter.has_score() ? filter.node_score + frow * filter.row_stride : nullptr;
    for (int64_t k = 0; k < beams; ++k) {
      const int64_t r = b * beams + k;
      const int32_t node = nodes[r];
      if (node < 0 || node >= trie.num_nodes || IsLeaf(trie, node)) continue;
      const Storage* row = static_cast<const Storage*>(logits) + r * logits_row_stride;
      const int32_t lo = trie.child_offsets[node];
      const int32_t hi = trie.child_offsets[node + 1];
      // With renormalisation the full-row normaliser cancels out, so it is skipped.
      const float log_norm = params.renormalize
                                 ? 0.0f
                                 : static_cast<float>(cpu::RowLogSumExp<kType>(row, vocab, scale));
      child_logp.resize(static_cast<size_t>(hi - lo));
      for (int32_t c = lo; c < hi; ++c) {
        const int64_t tok = trie.token[c];
        // A negative trie token would index before the row.
        IGD_CHECK_ARG(tok >= 0, "trie node ", c, " holds the negative token id ", tok,
                      "; the trie is corrupt (validate it with ItemTrie.validate())");
        child_logp[c - lo] = tok < vocab ? S::Load(row[tok]) * scale - log_norm : kNegInf;
        if (!allowed.allowed(c)) child_logp[c - lo] = kNegInf;  // like a non-child
      }
      if (params.renormalize) {
        float m = kNegInf;
        for (float v : child_logp) m = v > m ? v : m;
        if (std::isfinite(m)) {
          double total = 0.0;
          for (float v : child_logp) total += std::exp(static_cast<double>(v) - m);
          const float child_norm = static_cast<float>(m + std::log(total));
          for (float& v : child_logp) v -= child_norm;
        } else if (std::isnan(m)) {
          for (float& v : child_logp) v = m;
        }
      }
      const float base = beam_scores[r];
      for (int32_t c = lo; c < hi; ++c) {
        if (!allowed.allowed(c)) continue;  // never a candidate
        const float logp = child_logp[c - lo];
        const float w = 1.0f - params.alpha * trie.info_gain_norm[c];
        float step = logp == kNegInf ? kNegInf : w * logp;
        if (cf) step = cf[c] == kNegInf ? kNegInf : step + filter.score_weight * (cf[c] - cf[node]);
        const float score = base + step;
        cands.push_back(Candidate{std::isnan(score) ? kNegInf : score, score, logp,
                                  static_cast<int32_t>(k), trie.token[c], c});
      }
    }
    const int64_t keep = std::min<int64_t>(num_candidates, static_cast<int64_t>(cands.size()));
    if (static_cast<int64_t>(cands.size()) > keep) {
      std::nth_element(cands.begin(), cands.begin() + keep, cands.end(), Before);
    }
    std::sort(cands.begin(), cands.begin() + keep, Before);
    const int64_t o = b * num_candidates;
    for (int64_t i = 0; i < num_candidates; ++i) {
      if (i < keep) {
        const Candidate& c = cands[i];
        out.score[o + i] = c.score;
        out.logp[o + i] = c.logp;
        out.beam[o + i] = c.beam;
        out.token[o + i] = c.token;
        out.node[o + i] = c.node;
      } else {
        out.score[o + i] = kNegInf;
        out.logp[o + i] = kNegInf;
        out.beam[o + i] = -1;
        out.token[o + i] = -1;
        out.node[o + i] = -1;
      }
    }
  }
}

}  // namespace

void BeamStep(const TrieView& trie, const void* logits, ScalarType dtype, int64_t batch,
              int64_t beams, int64_t vocab, int64_t logits_row_stride, const float* beam_scores,
              const int32_t* nodes, const DecodeParams& params, int64_t num_candidates,
              const BeamStepOutput& out) {
  // The bindings checked the arguments once (shapes; Python the temperature); debug builds
  // assert that contract. What the op reads from memory is checked here: the node ids (O(batch *
  // beams)) and the trie tokens, as the children are visited.
  assert(trie.num_nodes >= 1 && batch >= 0 && beams >= 1 && vocab >= 0 && num_candidates >= 1);
  assert(logits_row_stride >= 0);
  assert(params.temperature > 0.0f && std::isfinite(params.temperature));
  for (int64_t r = 0; r < batch * beams; ++r) {
    // Negative node ids mark inactive beams; ids past the trie are caller bugs.
    IGD_CHECK_ARG(nodes[r] < trie.num_nodes, "nodes[", r, "] = ", nodes[r],
                  " is not a node of the trie [0, ", trie.num_nodes, ")");
  }
  switch (dtype) {
    case ScalarType::kFloat32:
      BeamStepTyped<ScalarType::kFloat32>(trie, logits, batch, beams, vocab, logits_row_stride,
                                          beam_scores, nodes, params, num_candidates, out);
      break;
    case ScalarType::kBFloat16:
      BeamStepTyped<ScalarType::kBFloat16>(trie, logits, batch, beams, vocab, logits_row_stride,
                                           beam_scores, nodes, params, num_candidates, out);
      break;
    case ScalarType::kFloat16:
      BeamStepTyped<ScalarType::kFloat16>(trie, logits, batch, beams, vocab, logits_row_stride,
                                          beam_scores, nodes, params, num_candidates, out);
      break;
    default:
      IGD_CHECK_ARG(false, "unsupported logits dtype code ", static_cast<int>(dtype));
  }
}

}  // namespace igdbeam
