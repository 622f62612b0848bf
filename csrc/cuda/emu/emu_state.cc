// Thread-local state of the CPU emulation (see cuda_emu.h).
#include "cuda_emu.h"

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace igdbeam::emu {
thread_local BlockContext* tls_block = nullptr;
}  // namespace igdbeam::emu
