// Argument checks of the decode ops, shared by the CPU ops (cpu/processor_step.cc,
// cpu/beam_step.cc) and the bindings, which run them before dispatching to either backend
// (bindings/bind_decode.cc). Each throws InvalidArgument (errors.h) with the same message there.
// The CUDA wrappers do not repeat them: they rely on the bindings having run them
// (cuda_kernels.h) and check only the CUDA backend's own limits.
#pragma once

#include <cmath>
#include <cstdint>

#include "igdbeam/errors.h"

namespace igdbeam {

inline void CheckTemperature(float temperature) {
  IGD_CHECK_ARG(temperature > 0.0f && std::isfinite(temperature),
                "temperature must be a positive finite number, got ", temperature);
}

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
