"""The array layout of an item trie: the names, dtypes and shapes of its arrays, and a container.

The layout is the one documented in ``csrc/include/igdbeam/trie.h``: nodes are numbered
breadth-first (root 0) and the children of node ``n`` are the node ids
``child_offsets[n] .. child_offsets[n + 1] - 1``, sorted by token. Per-node arrays describe the
edge entering the node (``token``, ``info_gain``, ``info_gain_norm``, ``zero_ig``). Every array
is 1-D:

=====================  ==========  ===================================================
array                  dtype       length
=====================  ==========  ===================================================
``child_offsets``      int32       ``num_nodes + 1``
``token``              int32       ``num_nodes`` (root: -1)
``parent``             int32       ``num_nodes`` (root: -1)
``depth``              uint16      ``num_nodes`` (root: 0)
``entropy``            float32     ``num_nodes``
``info_gain``          float32     ``num_nodes``
``info_gain_norm``     float32     ``num_nodes``
``zero_ig``            uint8       ``num_nodes``
``leaf_nodes``         int32       ``num_leaves`` (ascending)
``leaf_item_offsets``  int32       ``num_leaves + 1``
``leaf_items``         int32       items that have a path (``<= num_items``)
``item_leaf``          int32       ``num_items`` (-1: the item has no path)
``leaf_weight``        float64     ``num_leaves``
=====================  ==========  ===================================================

This module holds only the layout; building (:mod:`igdbeam.trie.build`), the file format
(:mod:`igdbeam.trie.file_format`) and the class (:mod:`igdbeam.trie.item_trie`) import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypedDict

import numpy as np
import torch

# Entropy modes by name, with the code the native builder takes.
ENTROPY_MODES: Final[dict[str, int]] = {"global": 0, "conditional": 1}

# Per-node arrays (length num_nodes, child_offsets num_nodes + 1), in the order the native
# TrieView takes their pointers.
NODE_ARRAYS: Final[tuple[str, ...]] = (
    "child_offsets",
    "token",
    "parent",
    "depth",
    "entropy",
    "info_gain",
    "info_gain_norm",
    "zero_ig",
)
# Per-leaf and per-item arrays.
ITEM_ARRAYS: Final[tuple[str, ...]] = (
    "leaf_nodes",
    "leaf_item_offsets",
    "leaf_items",
    "item_leaf",
    "leaf_weight",
)
ALL_ARRAYS: Final[tuple[str, ...]] = NODE_ARRAYS + ITEM_ARRAYS
ARRAY_DTYPES: Final[dict[str, np.dtype]] = {
    "child_offsets": np.dtype(np.int32),
    "token": np.dtype(np.int32),
    "parent": np.dtype(np.int32),
    "depth": np.dtype(np.uint16),
    "entropy": np.dtype(np.float32),
    "info_gain": np.dtype(np.float32),
    "info_gain_norm": np.dtype(np.float32),
    "zero_ig": np.dtype(np.uint8),
    "leaf_nodes": np.dtype(np.int32),
    "leaf_item_offsets": np.dtype(np.int32),
    "leaf_items": np.dtype(np.int32),
    "item_leaf": np.dtype(np.int32),
    "leaf_weight": np.dtype(np.float64),
}
# Arrays the kernels read on the compute device; the rest stay on the CPU.
DEVICE_ARRAYS: Final[tuple[str, ...]] = NODE_ARRAYS + (
    "leaf_nodes",
    "leaf_item_offsets",
    "leaf_items",
)


class TrieMeta(TypedDict):
    """The scalar metadata stored next to the arrays (and in a trie file's header)."""

    entropy: str
    """Entropy mode, a key of :data:`ENTROPY_MODES`."""
    vocab_size: int
    """Vocabulary the token ids were checked against, -1 for none."""
    max_depth: int
    """Length of the longest item path."""
    max_fanout: int
    """Largest number of children of one node."""
    num_items: int
    """Number of catalog items (``item_leaf``'s length)."""


META_FIELDS: Final[tuple[str, ...]] = tuple(TrieMeta.__annotations__)


@dataclass(frozen=True)
class TrieData:
    """A trie's arrays by name (the :data:`ALL_ARRAYS`, dtypes as :data:`ARRAY_DTYPES`) and
    its metadata: what the builder returns, the file format reads and writes, and
    :class:`~igdbeam.trie.item_trie.ItemTrie` wraps.
    """

    arrays: dict[str, torch.Tensor]
    meta: TrieMeta
