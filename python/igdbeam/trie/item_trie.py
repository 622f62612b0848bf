"""ItemTrie: the catalog's token paths as flat CSR arrays with entropy and information gain.

The arrays follow the layout documented in ``csrc/include/igdbeam/trie.h``: nodes are numbered
breadth-first (root 0) and the children of node ``n`` are the node ids
``child_offsets[n] .. child_offsets[n + 1] - 1``, sorted by token. Per-node arrays describe the
edge entering the node (``token``, ``info_gain``, ``info_gain_norm``, ``zero_ig``).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from igdbeam.errors import (
    InvalidIdError,
    VocabularyError,
    as_id_array,
    as_index,
    first_non_integer,
)
from igdbeam.native.library import _C

ENTROPY_MODES = {"global": 0, "conditional": 1}

# Per-node arrays (length num_nodes, child_offsets num_nodes + 1) and per-leaf / per-item arrays.
NODE_ARRAYS = (
    "child_offsets",
    "token",
    "parent",
    "depth",
    "entropy",
    "info_gain",
    "info_gain_norm",
    "zero_ig",
)
ITEM_ARRAYS = ("leaf_nodes", "leaf_item_offsets", "leaf_items", "item_leaf", "leaf_weight")
ARRAY_DTYPES: dict[str, np.dtype] = {
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
DEVICE_ARRAYS = NODE_ARRAYS + ("leaf_nodes", "leaf_item_offsets", "leaf_items")


def _as_int64(values: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """Return a 1-D contiguous int64 numpy array, or raise naming ``name``.

    Raises:
        InvalidIdError: a float / bool / non-numeric dtype or element (never truncated).
        ValueError: not 1-D.
    """
    arr = as_id_array(values, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(arr.shape)}")
    return arr


def _as_weights(weights: Sequence[float] | np.ndarray | torch.Tensor, num_items: int) -> np.ndarray:
    """Return item weights as float64 ``[num_items]``; bools, strings and objects are refused.

    Finiteness and signs are checked by the native build, which names the item.
    """
    if isinstance(weights, torch.Tensor):
        if weights.dtype == torch.bool or weights.is_complex():
            raise ValueError(f"weights must be real numbers, got dtype {weights.dtype}")
        w = weights.detach().cpu().numpy()
    elif isinstance(weights, np.ndarray) and weights.dtype != object:
        w = weights
    else:
        if isinstance(weights, str | bytes):
            raise ValueError("weights must be a sequence of numbers, got a string")
        values = list(weights.reshape(-1) if isinstance(weights, np.ndarray) else weights)
        for i, v in enumerate(values):
            if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.number):
                raise ValueError(
                    f"item {i} has weight {v!r} ({type(v).__name__}); weights must be finite "
                    "numbers >= 0"
                )
        w = np.asarray(values, dtype=np.float64)
    if w.dtype.kind not in "iuf":
        raise ValueError(f"weights must be real numbers, got dtype {w.dtype}")
    w = np.ascontiguousarray(w, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != num_items:
        raise ValueError(
            f"weights must have one value per item ({num_items}), got shape {tuple(w.shape)}"
        )
    return w


def _item_of_token(offsets: np.ndarray, k: int) -> tuple[int, int]:
    """``(item, position)`` of flat token index ``k`` (offsets valid, ascending)."""
    item = int(np.searchsorted(offsets, k, side="right")) - 1
    return item, int(k - offsets[item])


def _check_token_ranges(offsets: np.ndarray, tokens: np.ndarray, vocab_size: int | None) -> None:
    """Raise a typed error naming the item and position of the first token id out of range.

    Runs only when the offsets are well formed; the native build reports malformed offsets.
    """
    if (
        offsets.shape[0] < 2
        or offsets[0] != 0
        or offsets[-1] != tokens.shape[0]
        or bool((offsets[1:] < offsets[:-1]).any())
        or tokens.shape[0] == 0
    ):
        return
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0:
        item, pos = _item_of_token(offsets, int(np.argmax(tokens < 0)))
        raise InvalidIdError(
            f"item {item} has a negative token id {int(tokens[offsets[item] + pos])} at "
            f"position {pos}; token ids must be >= 0"
        )
    if vocab_size is not None and hi >= vocab_size:
        item, pos = _item_of_token(offsets, int(np.argmax(tokens >= vocab_size)))
        raise VocabularyError(
            f"item {item} has token id {int(tokens[offsets[item] + pos])} at position {pos}, "
            f"outside the vocabulary [0, {vocab_size})"
        )
    if hi > _INT32_MAX:
        item, pos = _item_of_token(offsets, int(np.argmax(tokens > _INT32_MAX)))
        raise InvalidIdError(
            f"item {item} has token id {int(tokens[offsets[item] + pos])} at position {pos} "
            "that does not fit in 32 bits"
        )


_INT32_MAX = 2**31 - 1


def _paths_to_csr(sequences: Iterable[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Flatten token sequences into (offsets, tokens) int64 arrays.

    Raises:
        TypeError: ``sequences`` is one tensor/array, or an item is a string or not a sequence.
        InvalidIdError: a token that is not an integer (float, bool, NaN, ...), naming the item
            and the position; nothing is truncated.
    """
    if isinstance(sequences, torch.Tensor | np.ndarray):
        raise TypeError(
            "sequences must be a list of token-id lists (one per item, terminator included), "
            "not a single tensor/array; use ItemTrie.from_csr for flat arrays"
        )
    rows: list[Sequence[int]] = []
    for index, seq in enumerate(sequences):
        if isinstance(seq, str | bytes):
            raise TypeError(
                f"item {index} is a string; ItemTrie.from_token_ids takes token ids, "
                "use ItemTrie.from_titles for text"
            )
        if isinstance(seq, torch.Tensor | np.ndarray):
            if seq.ndim != 1:
                raise TypeError(f"item {index} must be a 1-D token path, got shape {seq.shape}")
            if not isinstance(seq, np.ndarray) or seq.dtype != object:
                # Keeps the dtype visible: a float tensor becomes floats, rejected below.
                seq = seq.tolist()
            else:
                seq = list(seq)
        elif not isinstance(seq, Sequence):
            try:
                seq = list(seq)
            except TypeError:
                raise TypeError(
                    f"item {index} must be a sequence of token ids, got {type(seq).__name__}"
                ) from None
        rows.append(seq)
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = list(itertools.chain.from_iterable(rows))
    bad = first_non_integer(flat)
    if bad >= 0:
        item, pos = _item_of_token(offsets, bad)
        raise InvalidIdError(
            f"item {item} has token {flat[bad]!r} ({type(flat[bad]).__name__}) at position {pos}; "
            "token ids must be integers (not floats, bools or NaN)"
        )
    try:
        tokens = np.fromiter(flat, dtype=np.int64, count=len(flat))
    except OverflowError:
        k = next(i for i, t in enumerate(flat) if not -(2**63) <= t < 2**63)
        item, pos = _item_of_token(offsets, k)
        raise InvalidIdError(
            f"item {item} has token id {flat[k]} at position {pos} that does not fit in 64 bits"
        ) from None
    return offsets, tokens


class ItemTrie:
    """A catalog of item token paths with per-node entropy and per-edge information gain.

    Build it with :meth:`from_token_ids` or :meth:`from_titles`; move it to a GPU with
    :meth:`to`. One instance is immutable and may be shared by threads, DataLoader workers
    (it pickles) and processes (``save`` / ``load`` memory-maps the arrays).
    """

    def __init__(self, arrays: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Wrap already-built arrays; use the ``from_*`` constructors or :meth:`load` instead."""
        self._arrays = arrays
        self._fanouts: tuple[int, int] | None = None
        self._meta = dict(meta)
        self._view: Any = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_csr(
        cls,
        offsets: np.ndarray | torch.Tensor,
        tokens: np.ndarray | torch.Tensor,
        weights: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        *,
        entropy: str = "global",
        vocab_size: int | None = None,
        equal_ig_rtol: float = 1e-9,
    ) -> ItemTrie:
        """Build from paths in CSR form: item ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``.

        The fast path for large catalogs (no Python lists); arguments otherwise as
        :meth:`from_token_ids`. ``offsets`` and ``tokens`` must have an integer dtype: float or
        bool arrays are refused, never truncated.
        """
        offsets = _as_int64(offsets, "offsets")
        tokens = _as_int64(tokens, "tokens")
        if entropy not in ENTROPY_MODES:
            raise ValueError(f"entropy must be one of {sorted(ENTROPY_MODES)}, got {entropy!r}")
        if vocab_size is not None:
            vocab_size = as_index(vocab_size, "vocab_size")
            if vocab_size <= 0:
                raise ValueError(f"vocab_size must be a positive integer, got {vocab_size}")
        num_items = offsets.shape[0] - 1
        w = None if weights is None else _as_weights(weights, num_items)
        _check_token_ranges(offsets, tokens, vocab_size)
        raw = _C.build_trie(
            offsets,
            tokens,
            w,
            ENTROPY_MODES[entropy],
            -1 if vocab_size is None else vocab_size,
            float(equal_ig_rtol),
        )
        arrays = {name: torch.from_numpy(raw[name]) for name in NODE_ARRAYS + ITEM_ARRAYS}
        meta = {
            "entropy": entropy,
            "vocab_size": -1 if vocab_size is None else int(vocab_size),
            "max_depth": int(raw["max_depth"]),
            "max_fanout": int(raw["max_fanout"]),
            "num_items": int(num_items),
        }
        return cls(arrays, meta)

    @classmethod
    def from_token_ids(
        cls,
        sequences: Iterable[Sequence[int]],
        weights: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        *,
        entropy: str = "global",
        vocab_size: int | None = None,
        equal_ig_rtol: float = 1e-9,
    ) -> ItemTrie:
        """Build a trie from one token-id path per item (terminator included).

        Args:
            sequences: item ``i``'s token path is ``sequences[i]``; paths must end in a
                terminator so that no path is a prefix of another (duplicates are allowed and
                share one leaf).
            weights: item weights ``w_i >= 0`` (``p_r(i) = w_i / sum w``); ``None`` is uniform.
            entropy: ``"global"`` (reference default, spec Eq. 5) or ``"conditional"``.
            vocab_size: when given, every token id must lie in ``[0, vocab_size)``.
            equal_ig_rtol: siblings whose IG spread is within this relative tolerance count as
                equal, so their normalised IG~ is 0.

        Raises:
            InvalidIdError: a token id that is not an integer (a float such as ``3.5``, a bool,
                NaN; never truncated) or is negative; the message names the item and position.
            VocabularyError: a token id ``>= vocab_size``.
            ValueError: empty catalog or path, weights that are negative, NaN, bools or of the
                wrong length, or a path that is a prefix of another. (The two errors above are
                ValueError subclasses too.)
        """
        offsets, tokens = _paths_to_csr(sequences)
        return cls.from_csr(
            offsets,
            tokens,
            weights,
            entropy=entropy,
            vocab_size=vocab_size,
            equal_ig_rtol=equal_ig_rtol,
        )

    @classmethod
    def from_titles(
        cls,
        titles: Sequence[str],
        tokenizer: Any,
        *,
        weights: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        context: str = "",
        prefix: str = "",
        suffix: str = "\n",
        eos: bool | int = True,
        entropy: str = "global",
        batch_size: int = 4096,
        progress: bool | None = None,
    ) -> ItemTrie:
        """Build a trie from item titles, tokenized in context exactly as the model emits them.

        Each item's path is the tokens of ``prefix + title + suffix`` encoded after ``context``
        (the end of the prompt), plus the EOS id (``eos=True``), a given id (``eos=<int>``) or
        nothing (``eos=False``). See :func:`igdbeam.trie.titles.tokenize_titles_in_context`.
        """
        from igdbeam.trie.titles import tokenize_titles_in_context

        paths = tokenize_titles_in_context(
            titles,
            tokenizer,
            context=context,
            prefix=prefix,
            suffix=suffix,
            eos=eos,
            batch_size=batch_size,
            progress=progress,
        )
        vocab_size = len(tokenizer) if hasattr(tokenizer, "__len__") else None
        return cls.from_token_ids(paths, weights, entropy=entropy, vocab_size=vocab_size)

    # ------------------------------------------------------------------ basic facts
    @property
    def num_nodes(self) -> int:
        """Number of trie nodes, root included."""
        return int(self._arrays["token"].shape[0])

    @property
    def num_items(self) -> int:
        """Number of catalog items (duplicates counted separately)."""
        return int(self._meta["num_items"])

    @property
    def num_leaves(self) -> int:
        """Number of distinct item paths (leaves)."""
        return int(self._arrays["leaf_nodes"].shape[0])

    @property
    def max_depth(self) -> int:
        """Length of the longest item path."""
        return int(self._meta["max_depth"])

    @property
    def max_fanout(self) -> int:
        """Largest number of children of one node."""
        return int(self._meta["max_fanout"])

    def fanout_bounds(self) -> tuple[int, int]:
        """``(root fan-out, largest fan-out of any other node)``, computed once and cached.

        The CUDA beam step uses them to size its select (a decoding step from the root has at
        most the root's fan-out candidates per prompt; a later one ``beams`` times the second).
        """
        if self._fanouts is None:
            off = self._arrays["child_offsets"]
            below = (off[2:] - off[1:-1]).max() if off.shape[0] > 2 else off[0]
            root, rest = torch.stack(((off[1] - off[0]).long(), below.long())).tolist()
            self._fanouts = (int(root), int(rest))
        return self._fanouts

    @property
    def vocab_size(self) -> int | None:
        """Vocabulary size the trie was validated against, or None."""
        v = int(self._meta["vocab_size"])
        return None if v < 0 else v

    @property
    def entropy_mode(self) -> str:
        """``"global"`` or ``"conditional"``."""
        return str(self._meta["entropy"])

    @property
    def device(self) -> torch.device:
        """Device of the kernel-facing arrays."""
        return self._arrays["token"].device

    @property
    def meta(self) -> dict[str, Any]:
        """A copy of the scalar metadata (entropy mode, vocab size, depth, fan-out, item count)."""
        return dict(self._meta)

    def array(self, name: str) -> torch.Tensor:
        """Return one of the trie's arrays by name (zero-copy)."""
        try:
            return self._arrays[name]
        except KeyError:
            raise KeyError(f"unknown trie array {name!r}; known: {sorted(self._arrays)}") from None

    def arrays(self) -> dict[str, torch.Tensor]:
        """All arrays by name (zero-copy views; do not modify them)."""
        return dict(self._arrays)

    child_offsets = property(lambda self: self._arrays["child_offsets"], doc="[num_nodes+1] CSR")
    token = property(lambda self: self._arrays["token"], doc="[num_nodes] token entering node")
    parent = property(lambda self: self._arrays["parent"], doc="[num_nodes] parent id, root -1")
    depth = property(lambda self: self._arrays["depth"], doc="[num_nodes] depth, root 0")
    entropy = property(lambda self: self._arrays["entropy"], doc="[num_nodes] H(node)")
    info_gain = property(lambda self: self._arrays["info_gain"], doc="[num_nodes] edge IG")
    info_gain_norm = property(
        lambda self: self._arrays["info_gain_norm"], doc="[num_nodes] sibling-normalised IG~"
    )
    zero_ig = property(
        lambda self: self._arrays["zero_ig"], doc="[num_nodes] zero-IG edge (siblings weigh 0)"
    )

    @property
    def child_tokens(self) -> torch.Tensor:
        """Child tokens in CSR order (the ``token`` array without the root's entry)."""
        return self._arrays["token"][1:]

    @property
    def child_nodes(self) -> torch.Tensor:
        """Child node ids in CSR order: breadth-first numbering makes them ``1..num_nodes-1``."""
        return torch.arange(1, self.num_nodes, dtype=torch.int32, device=self.device)

    @property
    def nbytes(self) -> int:
        """Bytes held by all arrays."""
        return int(sum(t.numel() * t.element_size() for t in self._arrays.values()))

    def __repr__(self) -> str:
        return (
            f"ItemTrie(items={self.num_items}, leaves={self.num_leaves}, nodes={self.num_nodes}, "
            f"max_depth={self.max_depth}, entropy={self.entropy_mode!r}, device={self.device})"
        )

    def __len__(self) -> int:
        return self.num_items

    # ------------------------------------------------------------------ devices
    def to(self, device: str | torch.device) -> ItemTrie:
        """Return a trie whose kernel-facing arrays live on ``device`` (self when already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        arrays = {
            name: (t.to(device) if name in DEVICE_ARRAYS else t) for name, t in self._arrays.items()
        }
        moved = ItemTrie(arrays, self._meta)
        moved._fanouts = self._fanouts
        return moved

    def cpu(self) -> ItemTrie:
        """Return the trie with its arrays on the CPU."""
        return self.to("cpu")

    def native_view(self) -> Any:
        """Return the cached ``_C.TrieView`` of raw pointers that the kernels read."""
        if self._view is None:
            a = self._arrays
            view = _C.TrieView(
                self.num_nodes,
                *(a[name].data_ptr() for name in NODE_ARRAYS),
                max_fanout=self.max_fanout,
            )
            # The view holds raw pointers: keep the arrays alive as long as the view is.
            view.owner = self
            self._view = view
        return self._view

    # ------------------------------------------------------------------ queries
    def children(self, node: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(tokens, node_ids)`` of the children of ``node`` (ascending tokens)."""
        node = self._check_node(node)
        lo, hi = (int(x) for x in self._arrays["child_offsets"][node : node + 2].tolist())
        return (
            self._arrays["token"][lo:hi].to(torch.int64),
            torch.arange(lo, hi, dtype=torch.int64, device=self.device),
        )

    def is_leaf(self, node: int) -> bool:
        """True when ``node`` has no children (an item path ends there)."""
        node = self._check_node(node)
        off = self._arrays["child_offsets"]
        return bool(off[node] == off[node + 1])

    def walk(
        self, tokens: torch.Tensor | Sequence[Sequence[int]], lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Walk each row of ``tokens`` from the root; return the int32 node reached, -1 if off.

        ``tokens`` is ``[rows, cols]`` int64 (any device the trie is on); ``lengths[r]`` (optional)
        limits row ``r`` to its first ``lengths[r]`` tokens, e.g. for right padding.
        """
        from igdbeam.ops.walk import walk_paths

        return walk_paths(self, tokens, lengths)

    def path_information_gain(self, tokens: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Return the float32 IG of each token along one path from the root.

        Raises:
            InvalidIdError: a token that is not an integer (float, bool, NaN).
            ValueError: the path leaves the trie (names the position and token).
        """
        seq = as_id_array(tokens, "tokens").reshape(-1).tolist()
        off = self._arrays["child_offsets"].cpu().numpy()
        tok = self._arrays["token"].cpu().numpy()
        ig = self._arrays["info_gain"].cpu().numpy()
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

    def item_path(self, item: int) -> list[int]:
        """Return the token path of catalog item ``item`` (terminator included).

        Raises:
            InvalidIdError: ``item`` is not an integer or lies outside ``[0, num_items)``.
        """
        item = as_index(item, "item id")
        if not 0 <= item < self.num_items:
            raise InvalidIdError(f"item id {item} is out of range [0, {self.num_items})")
        node = int(self._arrays["item_leaf"][item])
        parent = self._arrays["parent"].cpu()
        token = self._arrays["token"].cpu()
        path: list[int] = []
        while node > 0:
            path.append(int(token[node]))
            node = int(parent[node])
        return path[::-1]

    def items_of_node(self, node: int) -> list[int]:
        """Return the item ids of a leaf (all duplicates), or [] for an inner node."""
        node = self._check_node(node)
        leaves = self._arrays["leaf_nodes"].cpu().numpy()
        k = int(np.searchsorted(leaves, node))
        if k >= leaves.shape[0] or leaves[k] != node:
            return []
        off = self._arrays["leaf_item_offsets"].cpu().numpy()
        return self._arrays["leaf_items"][int(off[k]) : int(off[k + 1])].tolist()

    def item_ids_of_nodes(self, nodes: torch.Tensor) -> torch.Tensor:
        """Map node ids (any shape, any device) to the smallest item id of their leaf, else -1.

        Raises:
            InvalidIdError: ``nodes`` is not an integer tensor (a float tensor is never truncated).
        """
        if not isinstance(nodes, torch.Tensor):
            nodes = torch.from_numpy(as_id_array(nodes, "nodes"))
        elif nodes.dtype not in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
            raise InvalidIdError(f"nodes must hold integer node ids, got dtype {nodes.dtype}")
        nodes = nodes.to(self.device)
        leaves = self._arrays["leaf_nodes"]
        flat = nodes.reshape(-1).long()
        # Ids past the trie (int64 ids would wrap around in int32) are no leaf: -1.
        flat = torch.where((flat >= 0) & (flat < self.num_nodes), flat, -1).to(torch.int32)
        k = torch.searchsorted(leaves, flat.clamp(min=0)).clamp(max=leaves.numel() - 1)
        hit = (leaves[k] == flat) & (flat >= 0)
        first = self._arrays["leaf_items"][self._arrays["leaf_item_offsets"][k].long()]
        out = torch.where(hit, first.to(torch.int64), torch.full_like(first, -1, dtype=torch.int64))
        return out.reshape(nodes.shape)

    def stats(self) -> dict[str, float | int]:
        """Summary numbers, including the paper's Table 4 zero-IG token share.

        ``zero_ig_token_share`` weighs each item's path by its item weight (popularity when the
        trie was built with popularity weights): ``sum_i w_i * zeros(i) / sum_i w_i * len(i)``.
        ``zero_ig_token_share_uniform`` gives every distinct path the same weight.
        """
        off = self._arrays["child_offsets"].cpu().numpy()
        parent = self._arrays["parent"].cpu().numpy()
        zero = self._arrays["zero_ig"].cpu().numpy().astype(np.int64)
        depth = self._arrays["depth"].cpu().numpy()
        zeros_on_path = zero.copy()
        # Breadth-first numbering makes each depth a contiguous slice whose parents came earlier.
        starts = np.searchsorted(depth, np.arange(1, self.max_depth + 2))
        for d in range(1, self.max_depth + 1):
            lo, hi = starts[d - 1], starts[d]
            zeros_on_path[lo:hi] += zeros_on_path[parent[lo:hi]]
        leaves = self._arrays["leaf_nodes"].cpu().numpy()
        w = self._arrays["leaf_weight"].cpu().numpy()
        leaf_len = depth[leaves].astype(np.float64)
        leaf_zero = zeros_on_path[leaves].astype(np.float64)
        total_edges = max(self.num_nodes - 1, 1)
        fanouts = np.diff(off)
        inner = fanouts[fanouts > 0]
        return {
            "num_items": self.num_items,
            "num_leaves": self.num_leaves,
            "num_nodes": self.num_nodes,
            "max_depth": self.max_depth,
            "max_fanout": self.max_fanout,
            "mean_path_length": float(leaf_len.mean()),
            "mean_branching": float(inner.mean()) if inner.size else 0.0,
            "root_entropy": float(self._arrays["entropy"][0]),
            "zero_ig_token_share": float((w * leaf_zero).sum() / (w * leaf_len).sum()),
            "zero_ig_token_share_uniform": float(leaf_zero.sum() / leaf_len.sum()),
            "zero_ig_edge_share": float(zero.sum() / total_edges),
            "nbytes": self.nbytes,
            "bytes_per_node": self.nbytes / self.num_nodes,
        }

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the trie in igdbeam's versioned, memory-mappable format (see ``trie_io``).

        Atomic: the bytes go to a unique temporary file in the same folder, which is fsynced and
        renamed over ``path``, so readers and concurrent writers never see a partial or mixed
        file, and a trie memory-mapped from ``path`` keeps reading the old file's pages.
        """
        from igdbeam.trie.file_format import save_trie

        save_trie(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = True) -> ItemTrie:
        """Read and validate a trie written by :meth:`save`.

        Every array is checked (dtype, length, token ids within the vocabulary, the
        breadth-first CSR layout, parents, depths, sorted siblings, leaf / item maps, finite
        floats, checksums) before the trie is returned, so no file can make the kernels read or
        write out of bounds.

        Args:
            path: the trie file.
            mmap: ``True`` (default) maps the file copy-on-write: no copy, pages shared between
                processes. The memory-map contract: replace a loaded file only by renaming a new
                file over it (:meth:`save` does); never overwrite or truncate it in place while a
                process has it loaded (a truncated mapping dies with SIGBUS, rewritten pages
                change the trie behind its validation). ``False`` copies the whole file into
                private memory at load time, so the trie no longer depends on the file.

        Raises:
            TrieFormatError: the file is not a valid trie (a ValueError subclass).
        """
        from igdbeam.trie.file_format import load_trie

        return load_trie(path, mmap=mmap)

    def validate(self) -> None:
        """Check every array and the metadata as :meth:`load` does (a copy to the CPU first).

        Raises:
            TrieFormatError: the arrays do not form a well-formed trie.
        """
        from igdbeam.trie.file_format import validate_arrays

        validate_arrays({k: v.cpu().numpy() for k, v in self._arrays.items()}, self._meta)

    def __reduce__(self) -> tuple[Any, ...]:
        cpu = self.cpu()
        arrays = {name: t.numpy() for name, t in cpu._arrays.items()}
        return (_rebuild_trie, (arrays, self._meta, str(self.device)))

    # ------------------------------------------------------------------ helpers
    def _check_node(self, node: int) -> int:
        node = as_index(node, "node id")
        if not 0 <= node < self.num_nodes:
            raise InvalidIdError(f"node id {node} is out of range [0, {self.num_nodes})")
        return node


def _rebuild_trie(arrays: dict[str, np.ndarray], meta: dict[str, Any], device: str) -> ItemTrie:
    """Unpickle helper: rebuild on the CPU, then move to the pickled device when present."""
    trie = ItemTrie({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, meta)
    if device != "cpu" and (not device.startswith("cuda") or torch.cuda.is_available()):
        trie = trie.to(device)
    return trie


def popularity_weights(
    target_item_ids: Iterable[int] | np.ndarray | torch.Tensor,
    num_items: int,
    *,
    smoothing: float = 0.0,
) -> np.ndarray:
    """Count how often each item is a training target (the paper's popularity ``w_i``).

    Args:
        target_item_ids: the target item id of every training sample.
        num_items: catalog size; ids must lie in ``[0, num_items)``.
        smoothing: added to every count, so items never seen as a target keep a weight.

    Returns:
        float64 array of length ``num_items``.

    Raises:
        InvalidIdError: an id that is not an integer (a float such as ``1.5``, a bool, NaN; never
            truncated) or lies outside ``[0, num_items)``; ``num_items`` not a positive integer.
        ValueError: ``smoothing`` negative or not finite.
    """
    if not isinstance(target_item_ids, torch.Tensor | np.ndarray):
        target_item_ids = list(target_item_ids)
    ids = as_id_array(target_item_ids, "target_item_ids").reshape(-1)
    num_items = as_index(num_items, "num_items")
    if num_items <= 0:
        raise InvalidIdError(f"num_items must be positive, got {num_items}")
    if ids.size and (ids.min() < 0 or ids.max() >= num_items):
        pos = int(np.argmax((ids < 0) | (ids >= num_items)))
        raise InvalidIdError(
            f"target item id {int(ids[pos])} (entry {pos}) is out of range [0, {num_items})"
        )
    if isinstance(smoothing, bool | np.bool_) or not isinstance(smoothing, int | float | np.number):
        raise ValueError(f"smoothing must be a number >= 0, got {smoothing!r}")
    if not math.isfinite(smoothing) or smoothing < 0:
        raise ValueError(f"smoothing must be finite and >= 0, got {smoothing}")
    counts = np.bincount(ids, minlength=num_items).astype(np.float64)
    return counts + smoothing
