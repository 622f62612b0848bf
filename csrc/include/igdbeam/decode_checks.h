// Shape checks of the decode ops, run once by the bindings before dispatching to either backend
// (bindings/bind_decode.cc); each throws InvalidArgument (errors.h). The CPU and CUDA ops do not
// repeat them (debug builds assert them) and check only what they read from memory or their
// backend's own limits. The temperature is checked once in Python
// (igdbeam.ops.decode_steps.check_temperature).
#pragma once

#include <cstdint>

#include "igdbeam/errors.h"

namespace igdbeam {

// The shapes of ProcessorStep (kernels.h): the input ids, the score rows, the prompt length.
inline void CheckProcessorShape(int64_t rows, int64_t seq_len, int64_t vocab,
                                int64_t ids_row_stride, int64_t scores_row_stride,
                                int64_t prompt_len) {
  IGD_CHECK_ARG(rows >= 0 && seq_len >= 0 && vocab >= 0 && ids_row_stride >= 0,
                "bad shape: rows=", rows, " seq_len=", seq_len, " vocab=", vocab,
                " ids_row_stride=", ids_row_stride);
  IGD_CHECK_ARG(rows <= 1 || scores_row_stride >= vocab, "scores rows overlap: row stride ",
                scores_row_stride, " < vocab ", vocab);
  IGD_CHECK_ARG(prompt_len >= 0 && prompt_len <= seq_len, "prompt_len ", prompt_len,
                " must lie in [0, seq_len=", seq_len, "]");
}

// The shapes of BeamStep (kernels.h): the logits and the number of candidates kept per row.
inline void CheckBeamShape(int64_t batch, int64_t beams, int64_t vocab, int64_t logits_row_stride,
                           int64_t num_candidates) {
  IGD_CHECK_ARG(batch >= 0 && beams >= 1 && vocab >= 0 && logits_row_stride >= 0,
                "bad shape: batch=", batch, " beams=", beams, " vocab=", vocab,
                " logits_row_stride=", logits_row_stride);
  IGD_CHECK_ARG(num_candidates >= 1, "num_candidates must be >= 1, got ", num_candidates);
}

}  // namespace igdbeam
