"""The trie walk of token rows (the registered op ``igdbeam::walk_paths``: C++ for CPU tensors,
CUDA for GPU tensors).

A trie query (the node each token path reaches) behind :meth:`ItemTrie.walk
<igdbeam.trie.item_trie.ItemTrie.walk>`; it lives in ``trie/``, not ``ops/``, so that the trie
floor imports nothing above it (the ops take an ``ItemTrie``). It reads only the trie's device and
arrays, so it does not import ``item_trie``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from igdbeam.errors import InvalidIdError, first_non_integer
from igdbeam.native.checks import check_tensor, row_major
from igdbeam.native.torch_ops import WALK_PATHS, trie_operands


class WalkableTrie(Protocol):
    """What the walk reads from a trie (an :class:`~igdbeam.trie.item_trie.ItemTrie`)."""

    @property
    def device(self) -> torch.device:
        """Device of the kernel-facing arrays."""
        ...

    @property
    def max_fanout(self) -> int:
        """Largest number of children of one node."""
        ...

    def array(self, name: str) -> torch.Tensor:
        """One of the trie's arrays by name."""
        ...


def walk_paths(
    trie: WalkableTrie,
    tokens: torch.Tensor | Sequence[Sequence[int]],
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Walk each row of ``tokens`` ``[rows, cols]`` from the root; return int32 nodes (-1 = off).

    ``lengths[r]`` (optional, int64) limits row ``r`` to its first ``lengths[r]`` tokens.

    Raises:
        InvalidIdError: a token that is not an integer (float, bool, NaN; never truncated).
        ValueError: bad dtype, shape, device or ``lengths`` outside ``[0, cols]``.
        MissingCudaKernelsError: CUDA tensors with a build that has no CUDA kernels.
    """
    if not isinstance(tokens, torch.Tensor):
        paths = [list(r) for r in tokens]
        for i, row in enumerate(paths):
            bad = first_non_integer(row)
            if bad >= 0:
                raise InvalidIdError(
                    f"tokens[{i}][{bad}] = {row[bad]!r} ({type(row[bad]).__name__}) is not an "
                    "integer token id"
                )
        width = max((len(r) for r in paths), default=0)
        lengths = torch.tensor([len(r) for r in paths], dtype=torch.int64)
        tokens = torch.tensor([r + [0] * (width - len(r)) for r in paths], dtype=torch.int64)
        tokens, lengths = tokens.to(trie.device), lengths.to(trie.device)
    check_tensor("tokens", tokens, ndim=2, dtypes=(torch.int64,), device=trie.device)
    tokens = row_major(tokens)
    rows, cols = tokens.shape
    if lengths is not None:
        check_tensor("lengths", lengths, ndim=1, dtypes=(torch.int64,), device=trie.device)
        if lengths.shape[0] != rows:
            raise ValueError(f"lengths has {lengths.shape[0]} entries for {rows} token rows")
        lengths = lengths.contiguous()  # the C++ kernel checks 0 <= lengths <= cols
    return WALK_PATHS(trie_operands(trie), trie.max_fanout, tokens, lengths)
