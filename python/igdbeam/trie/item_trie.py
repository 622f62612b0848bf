"""ItemTrie: the catalog's token paths as flat CSR arrays with entropy and information gain.

The class wraps the arrays of :mod:`igdbeam.trie.layout` (built by :mod:`igdbeam.trie.build`,
stored by :mod:`igdbeam.trie.file_format`) and answers queries about them; the kernels read
them through :meth:`ItemTrie.native_view`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from igdbeam.errors import InvalidIdError, as_device, as_id_array
from igdbeam.native.library import _C
from igdbeam.trie.build import Weights, build_from_csr, build_from_paths
from igdbeam.trie.file_format import load_trie, save_trie, validate_arrays
from igdbeam.trie.layout import DEVICE_ARRAYS, NODE_ARRAYS, TrieData, TrieMeta
from igdbeam.trie.lookups import (
    checked_item,
    checked_node,
    children_of,
    first_items_of_nodes,
    items_of_leaf,
    node_is_leaf,
    path_information_gain,
    path_to_node,
)
from igdbeam.trie.statistics import fanout_bounds, trie_stats
from igdbeam.trie.titles import build_from_titles
from igdbeam.trie.walk import walk_paths


class ItemTrie:
    """A catalog of item token paths with per-node entropy and per-edge information gain.

    Build it with :meth:`from_token_ids` or :meth:`from_titles`; move it to a GPU with
    :meth:`to`. One instance is immutable and may be shared by threads, DataLoader workers
    (it pickles) and processes (``save`` / ``load`` memory-maps the arrays).
    """

    def __init__(self, arrays: Mapping[str, torch.Tensor], meta: TrieMeta) -> None:
        """Wrap built arrays (:mod:`igdbeam.trie.layout`); prefer ``from_*`` or :meth:`load`."""
        self._arrays = dict(arrays)
        self._fanouts: tuple[int, int] | None = None
        self._meta = meta.copy()
        self._view: Any = None

    @classmethod
    def from_data(cls, data: TrieData) -> ItemTrie:
        """Wrap the arrays and metadata of a :class:`~igdbeam.trie.layout.TrieData`."""
        return cls(data.arrays, data.meta)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_csr(
        cls,
        offsets: np.ndarray | torch.Tensor,
        tokens: np.ndarray | torch.Tensor,
        weights: Weights | None = None,
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
        data = build_from_csr(
            offsets,
            tokens,
            weights,
            entropy=entropy,
            vocab_size=vocab_size,
            equal_ig_rtol=equal_ig_rtol,
        )
        return cls.from_data(data)

    @classmethod
    def from_token_ids(
        cls,
        sequences: Iterable[Sequence[int]],
        weights: Weights | None = None,
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
        data = build_from_paths(
            sequences, weights, entropy=entropy, vocab_size=vocab_size, equal_ig_rtol=equal_ig_rtol
        )
        return cls.from_data(data)

    @classmethod
    def from_titles(
        cls,
        titles: Sequence[str],
        tokenizer: Any,
        *,
        weights: Weights | None = None,
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
        nothing (``eos=False``). Token ids are checked against ``len(tokenizer)`` when the
        tokenizer has a length. See :func:`igdbeam.trie.titles.tokenize_titles_in_context`
        (the tokenization lives in :mod:`igdbeam.trie.titles`; this class knows no tokenizer).
        """
        return cls.from_data(
            build_from_titles(
                titles,
                tokenizer,
                weights=weights,
                context=context,
                prefix=prefix,
                suffix=suffix,
                eos=eos,
                entropy=entropy,
                batch_size=batch_size,
                progress=progress,
            )
        )

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
            self._fanouts = fanout_bounds(self._arrays)
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
    def meta(self) -> TrieMeta:
        """A copy of the scalar metadata (entropy mode, vocab size, depth, fan-out, item count)."""
        return self._meta.copy()

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
        """Return a trie whose kernel-facing arrays live on ``device`` (self when already there).

        Raises:
            CudaUnavailableError: ``device`` is a CUDA device and no usable GPU is there (a
                RuntimeError; the message says why and suggests ``"cpu"``).
        """
        device = as_device(device)
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
                **{name: a[name].data_ptr() for name in NODE_ARRAYS},
                max_fanout=self.max_fanout,
            )
            # The view holds raw pointers: keep the arrays alive as long as the view is.
            view.owner = self
            self._view = view
        return self._view

    # ------------------------------------------------------------------ queries
    def children(self, node: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(tokens, node_ids)`` of the children of ``node`` (ascending tokens)."""
        return children_of(self._arrays, checked_node(self._arrays, node))

    def is_leaf(self, node: int) -> bool:
        """True when ``node`` has no children (an item path ends there)."""
        return node_is_leaf(self._arrays, checked_node(self._arrays, node))

    def walk(
        self, tokens: torch.Tensor | Sequence[Sequence[int]], lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Walk each row of ``tokens`` from the root; return the int32 node reached, -1 if off.

        ``tokens`` is ``[rows, cols]`` int64 (any device the trie is on); ``lengths[r]`` (optional)
        limits row ``r`` to its first ``lengths[r]`` tokens, e.g. for right padding.
        """
        return walk_paths(self, tokens, lengths)

    def path_information_gain(self, tokens: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Return the float32 IG of each token along one path from the root.

        Raises:
            InvalidIdError: a token that is not an integer (float, bool, NaN).
            ValueError: the path leaves the trie (names the position and token).
        """
        return path_information_gain(self._arrays, tokens)

    def item_path(self, item: int) -> list[int]:
        """Return the token path of catalog item ``item`` (terminator included).

        Raises:
            InvalidIdError: ``item`` is not an integer or lies outside ``[0, num_items)``.
        """
        leaf = self._arrays["item_leaf"][checked_item(self._arrays, item)]
        return path_to_node(self._arrays, int(leaf))

    def items_of_node(self, node: int) -> list[int]:
        """Return the item ids of a leaf (all duplicates), or [] for an inner node."""
        return items_of_leaf(self._arrays, checked_node(self._arrays, node))

    def item_ids_of_nodes(self, nodes: torch.Tensor) -> torch.Tensor:
        """Map node ids (any shape, any device) to the smallest item id of their leaf, else -1.

        Raises:
            InvalidIdError: ``nodes`` is not an integer tensor (a float tensor is never truncated).
        """
        if not isinstance(nodes, torch.Tensor):
            nodes = torch.from_numpy(as_id_array(nodes, "nodes"))
        elif nodes.dtype not in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
            raise InvalidIdError(f"nodes must hold integer node ids, got dtype {nodes.dtype}")
        return first_items_of_nodes(self._arrays, nodes.to(self.device))

    def stats(self) -> dict[str, float | int]:
        """Summary numbers, including the paper's Table 4 zero-IG token share.

        ``zero_ig_token_share`` weighs each item's path by its item weight (popularity when the
        trie was built with popularity weights): ``sum_i w_i * zeros(i) / sum_i w_i * len(i)``.
        ``zero_ig_token_share_uniform`` gives every distinct path the same weight.
        """
        return trie_stats(self._arrays, self._meta)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the trie in igdbeam's versioned, memory-mappable format (see ``file_format``).

        Atomic: the bytes go to a unique temporary file in the same folder, which is fsynced and
        renamed over ``path``, so readers and concurrent writers never see a partial or mixed
        file, and a trie memory-mapped from ``path`` keeps reading the old file's pages.
        """
        save_trie(TrieData(self._arrays, self._meta), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = True) -> ItemTrie:
        """Read and validate a trie written by :meth:`save`.

        Every array is checked (as :meth:`validate`: layout, ids, finite floats, checksums), so
        no file can make the kernels read or write out of bounds. ``mmap=True`` (default) maps
        the file copy-on-write (no copy, pages shared between processes; replace the file only
        by renaming a new one over it, as :meth:`save` does); ``False`` copies it into memory.

        Raises:
            TrieFormatError: the file is not a valid trie (a ValueError subclass).
        """
        return cls.from_data(load_trie(path, mmap=mmap))

    def validate(self) -> None:
        """Check every array and the metadata (a copy to the CPU first): dtypes, lengths, token
        ids within the vocabulary, the breadth-first CSR layout, parents, depths, sorted siblings,
        leaf / item maps, finite floats.

        Raises:
            TrieFormatError: the arrays do not form a well-formed trie.
        """
        validate_arrays({k: v.cpu().numpy() for k, v in self._arrays.items()}, self._meta)

    def __reduce__(self) -> tuple[Any, ...]:
        cpu = self.cpu()
        arrays = {name: t.numpy() for name, t in cpu._arrays.items()}
        return (_rebuild_trie, (arrays, self._meta, str(self.device)))


def _rebuild_trie(arrays: dict[str, np.ndarray], meta: TrieMeta, device: str) -> ItemTrie:
    """Unpickle helper: rebuild on the CPU, then move to the pickled device when present."""
    trie = ItemTrie({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, meta)
    if device != "cpu" and (not device.startswith("cuda") or torch.cuda.is_available()):
        trie = trie.to(device)
    return trie
