"""Summary numbers of a trie's arrays: sizes, path lengths, branching and zero-IG shares."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from igdbeam.trie.layout import TrieMeta


def trie_stats(arrays: Mapping[str, torch.Tensor], meta: TrieMeta) -> dict[str, float | int]:
    """Summary numbers of a trie (layout :mod:`igdbeam.trie.layout`), read on the CPU.

    Includes the paper's Table 4 zero-IG token share: ``zero_ig_token_share`` weighs each item's
    path by its item weight (popularity when the trie was built with popularity weights),
    ``sum_i w_i * zeros(i) / sum_i w_i * len(i)``; ``zero_ig_token_share_uniform`` gives every
    distinct path the same weight.
    """
    off = arrays["child_offsets"].cpu().numpy()
    parent = arrays["parent"].cpu().numpy()
    zero = arrays["zero_ig"].cpu().numpy().astype(np.int64)
    depth = arrays["depth"].cpu().numpy()
    max_depth = int(meta["max_depth"])
    zeros_on_path = zero.copy()
    # Breadth-first numbering makes each depth a contiguous slice whose parents came earlier.
    starts = np.searchsorted(depth, np.arange(1, max_depth + 2))
    for d in range(1, max_depth + 1):
        lo, hi = starts[d - 1], starts[d]
        zeros_on_path[lo:hi] += zeros_on_path[parent[lo:hi]]
    leaves = arrays["leaf_nodes"].cpu().numpy()
    w = arrays["leaf_weight"].cpu().numpy().astype(np.float64)
    if w.size and w.max() > 0:
        w = w / w.max()  # normalised first: products and sums of weights near 1e308 overflow
    leaf_len = depth[leaves].astype(np.float64)
    leaf_zero = zeros_on_path[leaves].astype(np.float64)
    num_nodes = int(arrays["token"].shape[0])
    fanouts = np.diff(off)
    inner = fanouts[fanouts > 0]
    nbytes = int(sum(t.numel() * t.element_size() for t in arrays.values()))
    return {
        "num_items": int(meta["num_items"]),
        "num_leaves": int(leaves.shape[0]),
        "num_nodes": num_nodes,
        "max_depth": max_depth,
        "max_fanout": int(meta["max_fanout"]),
        "mean_path_length": float(leaf_len.mean()),
        "mean_branching": float(inner.mean()) if inner.size else 0.0,
        "root_entropy": float(arrays["entropy"][0]),
        "zero_ig_token_share": float((w * leaf_zero).sum() / (w * leaf_len).sum()),
        "zero_ig_token_share_uniform": float(leaf_zero.sum() / leaf_len.sum()),
        "zero_ig_edge_share": float(zero.sum() / max(num_nodes - 1, 1)),
        "nbytes": nbytes,
        "bytes_per_node": nbytes / num_nodes,
    }


def fanout_bounds(arrays: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """``(root fan-out, largest fan-out of any other node)`` of the CSR ``child_offsets``."""
    off = arrays["child_offsets"]
    below = (off[2:] - off[1:-1]).max() if off.shape[0] > 2 else off[0]
    root, rest = torch.stack(((off[1] - off[0]).long(), below.long())).tolist()
    return int(root), int(rest)
