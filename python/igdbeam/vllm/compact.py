"""The trie as an engine-driven search sees it: compact token columns and sparse log-prob rows.

An engine such as vLLM hands back the log-probabilities of the tokens it was asked about (the
children of each beam's trie node), not a logits row over the vocabulary. The native beam step
(:func:`igdbeam.ops.decode_steps.beam_step`) takes logits rows and log-softmaxes them, so a row
is rebuilt from the children's log-probabilities in a *compact vocabulary*: column ``j`` is the
``j``-th smallest token id that occurs in the trie and one extra column, the **residual**,
holds the log of the probability mass of every other token, ``log(1 - sum_children p)``. The
row's log-sum-exp is then 0 (up to float32 rounding), so the beam step's log-softmax returns the
children's full-vocabulary log-probabilities unchanged, and ``renormalize`` (which normalises
over the children only) still sees exactly the children.

The compact trie is the same trie with its ``token`` array renamed by that monotone map (so
siblings stay sorted and node ids, IG~ weights and item filters are untouched); a few thousand
columns instead of the model's vocabulary keep the rebuilt rows small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie

NEG_INF = float("-inf")


class CompactTrie:
    """A trie's children in compact token columns, and the rows built from their log-probs.

    Attributes:
        trie: the original trie (its node ids are the compact trie's).
        compact: the same trie with token ids renamed to compact columns
            (``vocab_size = num_tokens + 1``; the last column is the residual).
        vocab: int64 ``[num_tokens]`` the original token id of each compact column.
        residual: the residual column (``num_tokens``).
    """

    def __init__(self, trie: ItemTrie) -> None:
        """Build the compact trie of ``trie`` (on the CPU)."""
        from igdbeam.trie.item_trie import ItemTrie

        trie = trie.cpu()
        self.trie = trie
        token = trie.array("token").numpy()
        vocab = np.unique(token[1:]).astype(np.int64) if token.shape[0] > 1 else np.zeros(0)
        self.vocab = torch.from_numpy(vocab)
        self.residual = int(vocab.shape[0])
        compact_token = token.copy()
        compact_token[1:] = np.searchsorted(vocab, token[1:]).astype(np.int32)
        arrays = trie.arrays()
        arrays["token"] = torch.from_numpy(compact_token)
        meta = trie.meta
        meta["vocab_size"] = self.residual + 1
        self.compact = ItemTrie(arrays, meta)
        self._offsets = trie.array("child_offsets").numpy().astype(np.int64)
        self._tokens = token.astype(np.int64)
        self._columns = compact_token.astype(np.int64)

    def fanout(self, node: int) -> int:
        """Number of children of ``node``."""
        return int(self._offsets[node + 1] - self._offsets[node])

    def child_tokens(self, node: int) -> list[int]:
        """The original token ids of ``node``'s children, in trie (token) order."""
        lo, hi = self._offsets[node], self._offsets[node + 1]
        return self._tokens[lo:hi].tolist()

    def chain(self, node: int) -> tuple[list[int], list[int]]:
        """The chain below ``node``: ``([node, n1, ..., nk], [t1, ..., tk])`` where each
        ``n_{i+1}`` (entered by token ``t_{i+1}``) is the only child of ``n_i`` and is not a
        leaf; ``nk`` has several children, or one that is a leaf."""
        off, nodes, tokens = self._offsets, [node], []
        n = node
        while off[n + 1] - off[n] == 1:
            child = int(off[n])
            if off[child + 1] == off[child]:
                break
            nodes.append(child)
            tokens.append(int(self._tokens[child]))
            n = child
        return nodes, tokens

    def logits(self, nodes: np.ndarray, child_logprobs: list[np.ndarray | None]) -> torch.Tensor:
        """Rows of compact logits whose log-softmax is each row's children's log-probs.

        Args:
            nodes: int ``[rows]`` trie node of each row (negative: an empty beam slot).
            child_logprobs: per row, float ``[fanout(node)]`` full-vocabulary log-probs of the
                node's children in trie order (None for an empty slot).

        Returns:
            float32 ``[rows, num_tokens + 1]``: ``-inf`` except the children's columns (their
            log-probs) and the residual column (``log`` of the rest of the mass, computed in
            float64). Empty slots get a row whose residual is 0.
        """
        rows = nodes.shape[0]
        out = torch.full((rows, self.residual + 1), NEG_INF, dtype=torch.float32)
        row_idx: list[np.ndarray] = []
        col_idx: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        residual = np.zeros(rows, dtype=np.float64)
        for r in range(rows):
            n = int(nodes[r])
            lp = child_logprobs[r]
            if n < 0 or lp is None:
                continue
            lo, hi = self._offsets[n], self._offsets[n + 1]
            lp64 = np.asarray(lp, dtype=np.float64)
            if lp64.shape[0] != hi - lo:
                raise ValueError(
                    f"row {r}: {lp64.shape[0]} log-probs for the {hi - lo} children of node {n}"
                )
            row_idx.append(np.full(hi - lo, r, dtype=np.int64))
            col_idx.append(self._columns[lo:hi])
            vals.append(lp64)
            mass = float(np.exp(lp64).sum()) if lp64.size else 0.0
            residual[r] = np.log1p(-mass) if mass < 1.0 else NEG_INF
        if row_idx:
            ri = torch.from_numpy(np.concatenate(row_idx))
            ci = torch.from_numpy(np.concatenate(col_idx))
            out[ri, ci] = torch.from_numpy(np.concatenate(vals)).to(torch.float32)
        out[:, self.residual] = torch.from_numpy(residual).to(torch.float32)
        return out

    def tokens_of_columns(self, columns: torch.Tensor) -> torch.Tensor:
        """Original token ids of compact columns (any shape; negative stays -1)."""
        cols = columns.to(torch.int64)
        valid = (cols >= 0) & (cols < self.residual)
        return torch.where(valid, self.vocab[cols.clamp(0, max(self.residual - 1, 0))], -1)
