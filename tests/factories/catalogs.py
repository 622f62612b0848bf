"""The synthetic item catalogs of the tests and benchmarks (one generator, several shapes).

Every path ends in ``EOS`` and holds only ordinary tokens (``>= FIRST_TOKEN``) before it, so no
path is a prefix of another. Two token distributions:

* uniform (``zipf=None``, the default): each path starts with one of ``heads`` random tokens
  (shared prefixes) and continues with tokens drawn uniformly from the ``alphabet`` lowest
  ordinary tokens; the paths are distinct and sorted. A fixed seed gives the same catalog as the
  former ``tests/decode_models.random_catalog`` (the decoding tests' assertions rely on it).
* Zipf (``zipf=a``): every token follows a Zipf law of exponent ``a`` (common words shared by
  many titles, so prefixes overlap as in tokenized titles), vectorised for million-item
  catalogs; paths may repeat.

``wide_root`` makes every head start at least one path (a root with ``heads`` children);
``duplicates`` appends copies of chosen items (a duplicate title: two items, one leaf).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from factories.ids import EOS, FIRST_TOKEN

# The worked example of the spec (section 5): terminator 2, popularity weights 4, 2, 1, 1.
EXAMPLE_PATHS = [[10, 11, 12, 2], [10, 11, 13, 2], [10, 14, 2], [20, 21, 2]]
EXAMPLE_WEIGHTS = [4, 2, 1, 1]


@dataclass(frozen=True)
class SyntheticCatalog:
    """Item paths in CSR form: item ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``."""

    offsets: np.ndarray
    tokens: np.ndarray

    @property
    def num_items(self) -> int:
        """The number of items (paths), duplicates included."""
        return int(self.offsets.shape[0]) - 1

    def paths(self) -> list[list[int]]:
        """The paths as fresh Python lists (what ``ItemTrie.from_token_ids`` takes)."""
        flat = self.tokens.tolist()
        bounds = self.offsets.tolist()
        return [flat[bounds[i] : bounds[i + 1]] for i in range(self.num_items)]

    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        """``(offsets, tokens)`` as int64 arrays (what ``ItemTrie.from_csr`` takes)."""
        return self.offsets, self.tokens


def synthetic_catalog(
    num_items: int,
    vocab_size: int = 96,
    *,
    seed: int = 0,
    min_len: int = 1,
    max_len: int = 4,
    heads: int = 3,
    alphabet: int | None = 9,
    zipf: float | None = None,
    wide_root: bool = False,
    duplicates: Sequence[int] = (),
    eos: int = EOS,
) -> SyntheticCatalog:
    """``num_items`` paths of ``min_len``..``max_len`` ordinary tokens plus ``eos``.

    Uniform paths (``zipf=None``) start with one of ``heads`` distinct random tokens of
    ``[FIRST_TOKEN, vocab_size)`` and continue with tokens of the ``alphabet`` lowest ordinary
    tokens (``None``: all of them); with ``wide_root`` the first ``heads`` paths take one head
    each. Zipf paths (``zipf=a``, ``heads`` and ``alphabet`` unused) draw every token from a
    Zipf law over the ordinary tokens. ``duplicates`` lists items whose copies are appended.
    """
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    if zipf is None:
        paths = _uniform_paths(
            num_items, vocab_size, seed, min_len, max_len, heads, alphabet, wide_root, eos
        )
        paths += [list(paths[i]) for i in duplicates]
        return _from_lists(paths)
    if wide_root:
        raise ValueError("wide_root needs uniform paths (zipf=None)")
    offsets, tokens = _zipf_csr(num_items, vocab_size, seed, min_len, max_len, zipf, eos)
    for i in duplicates:
        copy = tokens[offsets[i] : offsets[i + 1]]
        tokens = np.concatenate([tokens, copy])
        offsets = np.append(offsets, offsets[-1] + copy.shape[0])
    return SyntheticCatalog(offsets, tokens)


def _uniform_paths(
    num_items: int,
    vocab_size: int,
    seed: int,
    min_len: int,
    max_len: int,
    heads: int,
    alphabet: int | None,
    wide_root: bool,
    eos: int,
) -> list[list[int]]:
    """Distinct sorted paths; the draws keep the order of the former decode_models generator."""
    rng = random.Random(seed)
    tokens = list(range(FIRST_TOKEN, vocab_size))
    head_tokens = rng.sample(tokens, heads)
    body_tokens = tokens if alphabet is None else tokens[:alphabet]
    paths: set[tuple[int, ...]] = set()
    drawn = 0
    while len(paths) < num_items:
        length = rng.randint(min_len, max_len)
        head = head_tokens[drawn] if wide_root and drawn < heads else rng.choice(head_tokens)
        body = [head] + [rng.choice(body_tokens) for _ in range(length - 1)]
        paths.add(tuple(body) + (eos,))
        drawn += 1
    return [list(p) for p in sorted(paths)]


def _zipf_csr(
    num_items: int, vocab_size: int, seed: int, min_len: int, max_len: int, a: float, eos: int
) -> tuple[np.ndarray, np.ndarray]:
    """CSR paths with Zipf-distributed ordinary tokens, vectorised."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, size=num_items) + 1
    offsets = np.zeros(num_items + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = rng.zipf(a, size=int(offsets[-1])).astype(np.int64)
    tokens = FIRST_TOKEN + (tokens - 1) % (vocab_size - FIRST_TOKEN)
    tokens[offsets[1:] - 1] = eos
    return offsets, tokens


def _from_lists(paths: list[list[int]]) -> SyntheticCatalog:
    lengths = np.fromiter((len(p) for p in paths), dtype=np.int64, count=len(paths))
    offsets = np.zeros(len(paths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.fromiter((t for p in paths for t in p), dtype=np.int64, count=int(offsets[-1]))
    return SyntheticCatalog(offsets, tokens)
