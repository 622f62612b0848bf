"""The trie walk of token rows (C++ for CPU tensors, CUDA for GPU tensors, via ``run_op``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from igdbeam.errors import InvalidIdError, first_non_integer
from igdbeam.native.checks import check_tensor, row_major
from igdbeam.native.dispatch import run_op

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie


def walk_paths(
    trie: ItemTrie,
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
        lengths = lengths.contiguous()
        if trie.device.type == "cpu" and bool(((lengths < 0) | (lengths > cols)).any()):
            raise ValueError(f"lengths must lie in [0, {cols}]")
    out = torch.empty(rows, dtype=torch.int32, device=trie.device)
    if rows == 0:
        return out
    run_op(
        "walk_paths",
        trie.native_view(),
        tokens.data_ptr(),
        rows,
        cols,
        tokens.stride(0),
        0 if lengths is None else lengths.data_ptr(),
        out.data_ptr(),
        device_of=tokens,
    )
    return out
