// The hot ops, CPU backend. Every op has a CUDA twin with the same semantics in cuda_kernels.h;
// the pure-Python oracles in tests/oracles/ judge both.
//
// Contract: the arguments are checked once, before these functions run: values (alpha in [0, 1],
// temperature > 0 and finite, beta in [0, 1]) at the public Python entry points, and the shapes,
// strides, dtype codes and policies by the bindings (csrc/bindings/README.md). The ops trust
// that contract (debug builds assert it) and check only what they read from memory: node ids,
// lengths and trie tokens.
#pragma once

#include <cstdint>

#include "igdbeam/item_filters.h"
#include "igdbeam/trie.h"

namespace igdbeam {

enum class ScalarType : int32_t { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// ---- Walk -------------------------------------------------------------------------------------
// Walks row r's tokens[r, 0:lengths[r]] (lengths null: all `cols`) from the root and writes the
// node reached, or -1 when the path leaves the trie.
void WalkPaths(const TrieView& trie, const int64_t* tokens, int64_t rows, int64_t cols,
               int64_t row_stride, const int64_t* lengths, int32_t* out_nodes);

// ---- Training: label token weights (spec section 3) --------------------------------------------
enum class OffTriePolicy : int32_t { kError = 0, kUniform = 1, kIgnore = 2 };

enum RowStatus : int32_t { kRowOk = 0, kRowLeftTrie = 1, kRowNan = 2 };

struct LabelWeightsOutput {
  float* info_gain;     // [rows, cols]: IG of each completion token, 0 elsewhere
  uint8_t* zero_ig;     // [rows, cols]: 1 for a zero-IG completion token
  float* weight;        // [rows, cols]: beta for zero-IG tokens, 1 for others, 0 off completion
  int32_t* row_status;  // [rows]: kRowOk or kRowLeftTrie
};

// Walks the completion of each row (labels != ignore_index, in order) from the root. A row whose
// completion leaves the trie gets kRowLeftTrie, IG 0 and no zero-IG flag at every position (the
// prefix walked before leaving included), and its completion tokens weight beta (kUniform, the
// reference behaviour), 0 (kIgnore) or 0 with the error left to the caller (kError).
void LabelWeights(const TrieView& trie, const int64_t* labels, int64_t rows, int64_t cols,
                  int64_t row_stride, int64_t ignore_index, float beta, OffTriePolicy policy,
                  const LabelWeightsOutput& out);

// ---- Decoding: the logits-processor step (spec section 4) -------------------------------------
struct DecodeParams {
  float alpha = 0.0f;         // w = 1 - alpha * IG~
  float temperature = 1.0f;   // != 1: log_softmax(scores / temperature) over the full row first
  bool renormalize = false;   // renormalise log-probs over the allowed tokens before scaling
  int64_t eos_token_id = -1;  // at a leaf, only this token is allowed (score 0); -1: none
  NodeFilter filter;          // per-request item filters / CF scores (item_filters.h); none
};

// For each row: walks input_ids[r, prompt_len:seq_len] to its node (written to out_nodes), then
// rewrites scores[r, :] in place: children y of the node get (1 - alpha IG~(y)) * logp(y), every
// other token -inf. row_status gets kRowLeftTrie (row all -inf) or kRowNan (a child's score NaN).
void ProcessorStep(const TrieView& trie, const int64_t* input_ids, int64_t rows, int64_t seq_len,
                   int64_t ids_row_stride, int64_t prompt_len, void* scores, ScalarType dtype,
                   int64_t vocab, int64_t scores_row_stride, const DecodeParams& params,
                   int32_t* out_nodes, int32_t* row_status);

// ---- Decoding: the fused beam step of igdbeam.decoding.generate ------------------------------
struct BeamStepOutput {
  float* score;    // [batch, num_candidates]: beam_score + w * logp, descending; -inf pads
  float* logp;     // [batch, num_candidates]: the unweighted logp of the token
  int32_t* beam;   // [batch, num_candidates]: beam index within the batch row, -1 pads
  int64_t* token;  // [batch, num_candidates]: token id, -1 pads
  int32_t* node;   // [batch, num_candidates]: child node reached, -1 pads
};

// logits: [batch * beams, vocab] raw model logits (any ScalarType), row r = b * beams + k.
// nodes[r] < 0 or a leaf marks beam r inactive. For each batch row, scores every child of every
// active beam and keeps the best num_candidates, ordered by score descending, ties by
// (beam, token) ascending.
// Contract: every nodes[r] is < trie.num_nodes. The CPU op checks it (InvalidArgument naming
// the row). The CUDA op cannot read device memory on the host without a synchronisation, so it
// does not check: its kernels never read out of bounds and treat such a beam like an inactive
// one, but that result is unspecified, not a feature; callers must pass valid ids.
void BeamStep(const TrieView& trie, const void* logits, ScalarType dtype, int64_t batch,
              int64_t beams, int64_t vocab, int64_t logits_row_stride, const float* beam_scores,
              const int32_t* nodes, const DecodeParams& params, int64_t num_candidates,
              const BeamStepOutput& out);

}  // namespace igdbeam
