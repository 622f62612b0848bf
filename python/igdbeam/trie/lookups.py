"""Path and item lookups on a trie's arrays (layout :mod:`igdbeam.trie.layout`).

The functions take the arrays by name; :func:`checked_node` and :func:`checked_item` turn a
user's id into a checked index, the others trust the ids they get.
:class:`~igdbeam.trie.item_trie.ItemTrie` exposes them as methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from igdbeam.errors import InvalidIdError, as_id_array, as_index


def _checked_id(value: int, what: str, count: int) -> int:
    """``value`` as an int in ``[0, count)``, else InvalidIdError naming ``what``."""
    value = as_index(value, what)
    if not 0 <= value < count:
        raise InvalidIdError(f"{what} {value} is out of range [0, {count})")
    return value


def checked_node(arrays: Mapping[str, torch.Tensor], node: int) -> int:
    """Return ``node`` as an int in ``[0, num_nodes)``.

    Raises:
        InvalidIdError: ``node`` is not an integer or lies outside the trie.
    """
    return _checked_id(node, "node id", arrays["token"].shape[0])


def checked_item(arrays: Mapping[str, torch.Tensor], item: int) -> int:
    """Return ``item`` as an int in ``[0, num_items)``.

    Raises:
        InvalidIdError: ``item`` is not an integer or lies outside the catalog.
    """
    return _checked_id(item, "item id", arrays["item_leaf"].shape[0])


def children_of(arrays: Mapping[str, torch.Tensor], node: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(tokens, node_ids)`` (int64) of the children of ``node`` (ascending tokens)."""
    lo, hi = (int(x) for x in arrays["child_offsets"][node : node + 2].tolist())
    token = arrays["token"]
    ids = torch.arange(lo, hi, dtype=torch.int64, device=token.device)
    return token[lo:hi].to(torch.int64), ids


def node_is_leaf(arrays: Mapping[str, torch.Tensor], node: int) -> bool:
    """True when ``node`` has no children (an item path ends there)."""
    off = arrays["child_offsets"]
    return bool(off[node] == off[node + 1])


def path_information_gain(
    arrays: Mapping[str, torch.Tensor], tokens: Sequence[int] | torch.Tensor
) -> torch.Tensor:
    """Return the float32 IG of each token along one path from the root (read on the CPU).

    Raises:
        InvalidIdError: a token that is not an integer (float, bool, NaN).
        ValueError: the path leaves the trie (names the position and token).
    """
    seq = as_id_array(tokens, "tokens").reshape(-1).tolist()
    off = arrays["child_offsets"].cpu().numpy()
    tok = arrays["token"].cpu().numpy()
    ig = arrays["info_gain"].cpu().numpy()
    node = 0
    out = np.zeros(len(seq), dtype=np.float32)
    for pos, t in enumerate(seq):
        lo, hi = int(off[node]), int(off[node + 1])
        k = lo + int(np.searchsorted(tok[lo:hi], t))
        if k >= hi or tok[k] != t:
            raise ValueError(
                f"the path leaves the trie at position {pos}: token {t} is not a child of the "
                f"prefix {seq[:pos]} (allowed: {tok[lo:hi][:20].tolist()}"
                f"{' ...' if hi - lo > 20 else ''})"
            )
        node = k
        out[pos] = ig[node]
    return torch.from_numpy(out)


def path_to_node(arrays: Mapping[str, torch.Tensor], node: int) -> list[int]:
    """Return the tokens from the root down to ``node`` (``[]`` for the root or ``node < 0``)."""
    parent = arrays["parent"].cpu()
    token = arrays["token"].cpu()
    path: list[int] = []
    while node > 0:
        path.append(int(token[node]))
        node = int(parent[node])
    return path[::-1]


def items_of_leaf(arrays: Mapping[str, torch.Tensor], node: int) -> list[int]:
    """Return the item ids of the leaf ``node`` (all duplicates), or [] for an inner node."""
    leaves = arrays["leaf_nodes"].cpu().numpy()
    k = int(np.searchsorted(leaves, node))
    if k >= leaves.shape[0] or leaves[k] != node:
        return []
    off = arrays["leaf_item_offsets"].cpu().numpy()
    return arrays["leaf_items"][int(off[k]) : int(off[k + 1])].tolist()


def first_items_of_nodes(arrays: Mapping[str, torch.Tensor], nodes: torch.Tensor) -> torch.Tensor:
    """Map integer node ids (any shape, on the arrays' device) to the smallest item id of their
    leaf; -1 for inner nodes and for ids outside the trie.
    """
    leaves = arrays["leaf_nodes"]
    num_nodes = arrays["token"].shape[0]
    flat = nodes.reshape(-1).long()
    # Ids past the trie (int64 ids would wrap around in int32) are no leaf: -1.
    flat = torch.where((flat >= 0) & (flat < num_nodes), flat, -1).to(torch.int32)
    k = torch.searchsorted(leaves, flat.clamp(min=0)).clamp(max=leaves.numel() - 1)
    hit = (leaves[k] == flat) & (flat >= 0)
    first = arrays["leaf_items"][arrays["leaf_item_offsets"][k].long()]
    out = torch.where(hit, first.to(torch.int64), torch.full_like(first, -1, dtype=torch.int64))
    return out.reshape(nodes.shape)
