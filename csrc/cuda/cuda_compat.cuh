// The CUDA headers, or (IGDBEAM_CUDA_EMU, a developer check on machines without a GPU) a small
// CPU emulation of the few CUDA features the kernels use: see emu/cuda_emu.h.
#pragma once

#if defined(IGDBEAM_CUDA_EMU)
#include "emu/cuda_emu.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

// kernel<<<grid, block, shared_bytes, stream>>>(args...) written as a macro, so that the emulation
// can run the same host wrappers.
#define IGD_LAUNCH(kernel, grid, block, shared_bytes, stream) \
  kernel<<<(grid), (block), (shared_bytes), (stream)>>>
// The block's dynamic shared memory as an array of `type`.
#define IGD_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif
