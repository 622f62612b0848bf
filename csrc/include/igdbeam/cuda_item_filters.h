// CUDA twin of BuildNodeFilters (item_filters.h): the same outputs, enqueued on `stream` without
// host synchronisation (see cuda_kernels.h for the Status contract).
#pragma once

#include <cstdint>

#include "igdbeam/cuda_kernels.h"
#include "igdbeam/item_filters.h"

namespace igdbeam::cuda {

// Device pointers throughout. max_depth is the trie's depth (ItemTrie.max_depth): one launch
// reduces each depth level, deepest first, after one over the leaves; the level boundaries are
// found on the device (a small cudaMallocAsync scratch on the stream).
Status BuildNodeFilters(const TrieView& trie, const LeafView& leaves, int64_t rows,
                        int32_t max_depth, const ItemInputs& in, const NodeFilterOutput& out,
                        void* stream) noexcept;

}  // namespace igdbeam::cuda
