"""What :func:`igdbeam.generate` returns, and the token paths it rebuilds from trie nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie


@dataclass
class RecommendationOutput:
    """The result of :func:`~igdbeam.generate` for ``B`` prompts and ``R`` returned hypotheses each.

    Attributes:
        item_ids: int64 ``[B, R]`` catalog item id of each hypothesis, best first (the smallest
            id when several items share a path); -1 where fewer than ``R`` items were found.
        scores: float32 ``[B, R]`` final score ``sum_t w_t logp_t / len ** length_penalty``;
            ``-inf`` where ``item_ids`` is -1.
        sequences: int64 ``[B, R, T]`` the generated tokens (terminator included), padded with
            ``pad_token_id`` to the longest one.
        lengths: int64 ``[B, R]`` number of generated tokens of each hypothesis (0 for a pad).
        nodes: int32 ``[B, R]`` trie leaf of each hypothesis (-1 for a pad).
        seconds: wall time of the beam search (prompt forward excluded); outputs that
            :func:`~igdbeam.generate_many` decoded in one shared search report the same time.
        prefill_seconds: wall time of the prompt forward (shared by all outputs of one call).
    """

    item_ids: torch.Tensor
    scores: torch.Tensor
    sequences: torch.Tensor
    lengths: torch.Tensor
    nodes: torch.Tensor
    seconds: float = 0.0
    prefill_seconds: float = 0.0


def paths_of_nodes(
    trie: ItemTrie, nodes: torch.Tensor, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token paths of trie nodes (any shape), padded; returns (tokens [..., T], lengths)."""
    # Index the int32 arrays first: converting them whole would copy the catalog every call.
    parent, token = trie.array("parent"), trie.array("token")
    depth = trie.array("depth")
    if depth.is_cuda:  # CUDA indexing has no uint16 kernel
        depth = depth.to(torch.int32)
    flat = nodes.reshape(-1).to(torch.int64)
    valid = flat >= 0
    cur = flat.clamp(min=0)
    lengths = torch.where(valid, depth[cur].to(torch.int64), torch.zeros_like(cur))
    width = int(lengths.max()) if lengths.numel() else 0
    out = torch.full((flat.shape[0], width), pad_token_id, dtype=torch.int64, device=nodes.device)
    rows = torch.arange(flat.shape[0], device=nodes.device)
    pos = lengths - 1
    for _ in range(width):
        live = pos >= 0
        out[rows[live], pos[live]] = token[cur[live]].to(torch.int64)
        cur = torch.where(live, parent[cur].to(torch.int64).clamp(min=0), cur)
        pos = pos - 1
    return out.reshape(*nodes.shape, width), lengths.reshape(nodes.shape)
