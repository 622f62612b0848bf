"""Synthetic catalogs with realistic title statistics for the benchmarks."""

from __future__ import annotations

import numpy as np


def zipf_catalog(
    num_items: int,
    *,
    vocab_size: int = 49_152,
    min_len: int = 10,
    max_len: int = 30,
    zipf_a: float = 1.2,
    terminator: int = 0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (offsets, tokens) CSR paths: 10-30 Zipf-distributed tokens plus a terminator.

    Token ids are drawn from a Zipf law (common words are shared across many titles, so prefixes
    overlap as in real catalogs) and kept in ``[1, vocab_size)``; every path ends in
    ``terminator``.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, size=num_items) + 1
    offsets = np.zeros(num_items + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = rng.zipf(zipf_a, size=int(offsets[-1])).astype(np.int64)
    tokens = 1 + (tokens - 1) % (vocab_size - 1)
    tokens[offsets[1:] - 1] = terminator
    return offsets, tokens


def as_lists(offsets: np.ndarray, tokens: np.ndarray) -> list[list[int]]:
    """Split CSR paths into Python lists (what a user of a dict trie starts from)."""
    flat = tokens.tolist()
    return [flat[offsets[i] : offsets[i + 1]] for i in range(offsets.shape[0] - 1)]
