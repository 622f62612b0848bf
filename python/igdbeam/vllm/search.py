"""IGD beam search driven by an engine that scores tokens: a step machine with no engine in it.

:class:`TrieSearch` runs :func:`igdbeam.generate`'s beam search (same candidates, tie-breaking,
finished slots, stopping rule and prompt compaction as :mod:`igdbeam.decoding.beam_search`) but
asks for the model's log-probabilities instead of calling a model. Each step it lists a
:class:`ChildQuery` for every running beam whose trie node it has no answer for yet; the caller
has an engine compute the full-vocabulary log-probabilities asked for and hands them back to
:meth:`TrieSearch.advance`, which runs igdbeam's native beam step on rows rebuilt by
:class:`~igdbeam.vllm.compact.CompactTrie`.

A trie node fixes the tokens generated so far, so answers are kept per ``(prompt, node)``; and
most title tokens have no alternative (84% of SmolLM2's MovieLens title tokens are the only
child of their node), so one query covers a beam's whole *chain* down to the next node that
branches: the engine runs the chain's tokens once (as a prompt) and returns the log-prob of
each, and the beams that later walk the chain need no engine call at all. The machine knows
nothing of vLLM: the same object serves ``vllm.LLM``, ``AsyncLLM`` and tests with any scorer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from igdbeam.decoding.beam_search import FinishedItems, Finisher, _finish_step
from igdbeam.decoding.inputs import Decoding
from igdbeam.decoding.outputs import RecommendationOutput, paths_of_nodes
from igdbeam.ops.decode_steps import checked_beam_step
from igdbeam.ops.node_filters import node_filters

if TYPE_CHECKING:
    from igdbeam.vllm.compact import CompactTrie

NEG_INF = float("-inf")


@dataclass(frozen=True)
class ChildQuery:
    """A question to the engine about one running beam and the trie chain below it.

    The beam sits at trie node ``nodes[0]``. While a node has exactly one child that is not a
    leaf, the search already knows the beam's next token, so one question covers the whole
    chain ``nodes[0] -> ... -> nodes[-1]`` (``nodes[-1]`` branches, or its only child ends an
    item): the engine runs ``token_ids + chain_tokens`` once and returns, for every node of the
    chain, the full-vocabulary log-probs of its children after the tokens leading to it.

    Attributes:
        prompt: index of the prompt the beam belongs to.
        token_ids: the prompt's tokens followed by the beam's generated tokens (to ``nodes[0]``).
        nodes: the chain's trie nodes.
        chain_tokens: the tokens from ``nodes[0]`` to ``nodes[-1]`` (``len(nodes) - 1``); each
            is the only child of the node before it.
        children: original token ids of the children of ``nodes[-1]`` (trie order).
    """

    prompt: int
    token_ids: list[int]
    nodes: list[int]
    chain_tokens: list[int]
    children: list[int]

    @property
    def sequence(self) -> list[int]:
        """The tokens the engine runs: ``token_ids + chain_tokens``."""
        return self.token_ids + self.chain_tokens


def check_prompt_ids(prompts: Any) -> list[list[int]]:
    """``prompts`` as a non-empty list of non-empty lists of non-negative ints (ValueError)."""
    if isinstance(prompts, torch.Tensor):
        prompts = prompts.tolist()
    if isinstance(prompts, np.ndarray):
        prompts = prompts.tolist()
    if not isinstance(prompts, Sequence) or isinstance(prompts, str | bytes) or not prompts:
        raise ValueError("prompts must be a non-empty list of token-id lists")
    out: list[list[int]] = []
    for i, p in enumerate(prompts):
        if isinstance(p, str | bytes) or not isinstance(p, Sequence | np.ndarray) or not len(p):
            raise ValueError(f"prompt {i} must be a non-empty list of token ids")
        row = []
        for t in p:
            if isinstance(t, bool) or not isinstance(t, int | np.integer) or int(t) < 0:
                raise ValueError(f"prompt {i} holds {t!r}, not a non-negative integer token id")
            row.append(int(t))
        out.append(row)
    return out


class TrieSearch:
    """The state of one IGD beam search over ``len(prompts)`` prompts (see the module docstring).

    Use::

        search = TrieSearch(compact, prompts, num_beams=10, decoding=Decoding(alpha=0.2))
        while not search.done:
            answers = [engine_logprobs(q.token_ids, q.children) for q in search.queries()]
            search.advance(answers)
        out = search.output()

    One instance is one search: it is not safe to share between threads, but any number of
    instances may run side by side (each keeps its own state; the compact trie is read only).
    """

    def __init__(
        self,
        compact: CompactTrie,
        prompts: Any,
        *,
        num_beams: int = 10,
        num_return_sequences: int | None = None,
        decoding: Decoding | None = None,
        pad_token_id: int = 0,
        max_new_tokens: int | None = None,
        item_mask: Any = None,
        item_scores: Any = None,
        item_score_weight: float = 1.0,
    ) -> None:
        """Check the arguments (ValueError) and set up the first step (the trie's root)."""
        d = (decoding or Decoding()).checked()
        if d.temperature != 1.0:
            raise ValueError(
                "temperature must be 1 here: the engine returns the model's raw log-probs"
            )
        K = int(num_beams)
        if K < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
        R = K if num_return_sequences is None else int(num_return_sequences)
        if not 1 <= R <= K:
            raise ValueError(f"num_return_sequences must lie in [1, num_beams={K}], got {R}")
        self.prompts = check_prompt_ids(prompts)
        B = len(self.prompts)
        trie = compact.trie
        self.compact, self.trie, self.decoding = compact, trie, d
        self.K, self.R, self.pad = K, R, int(pad_token_id)
        max_steps = trie.max_depth
        if max_new_tokens is not None:
            if int(max_new_tokens) < 1:
                raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
            max_steps = min(max_steps, int(max_new_tokens))
        self.max_steps = max_steps
        self.filters = node_filters(
            trie, item_mask, item_scores, item_score_weight=item_score_weight, num_rows=B
        )
        self.finisher = Finisher(d.length_penalty, d.early_stopping)
        self.fin = FinishedItems(
            torch.full((B, K), NEG_INF, dtype=torch.float32),
            torch.full((B, K), -1, dtype=torch.int32),
            torch.zeros(B, dtype=torch.bool),
        )
        offsets = trie.array("child_offsets")
        self._is_leaf = offsets[1:] == offsets[:-1]
        self._first_k = torch.arange(2 * K).unsqueeze(0) < K
        self.active = torch.arange(B)
        self.run_scores = torch.zeros(B, dtype=torch.float32)
        self.run_nodes = torch.zeros(B, dtype=torch.int32)
        self.generated = torch.zeros((B, 0), dtype=torch.int64)
        self.beams_now = 1
        self.step = 0
        self.done = B == 0
        self.steps_run = 0
        # Children log-probs known per (prompt, node): a trie node fixes the generated tokens,
        # so an answer serves every later step that reaches the node. Identical prompts share.
        self.known: dict[tuple[int, int], np.ndarray] = {}
        first: dict[tuple[int, ...], int] = {}
        self._canonical = [first.setdefault(tuple(p), i) for i, p in enumerate(self.prompts)]
        self._pending: list[ChildQuery] = []

    # ------------------------------------------------------------------ one step
    def queries(self) -> list[ChildQuery]:
        """The questions of the current step: one per running beam whose node's children are
        not known yet (see :class:`ChildQuery`; beams inside an answered chain need none)."""
        if self.done:
            return []
        nodes = self.run_nodes.tolist()
        active = self.active.tolist()
        out: list[ChildQuery] = []
        asked: set[tuple[int, int]] = set()
        gen: list[list[int]] | None = None
        for r, n in enumerate(nodes):
            if n < 0:
                continue
            p = self._canonical[active[r // self.beams_now]]
            if (p, n) in self.known or (p, n) in asked:
                continue
            asked.add((p, n))
            if gen is None:
                gen = self.generated.tolist()
            chain, tokens = self.compact.chain(n)
            children = self.compact.child_tokens(chain[-1])
            out.append(ChildQuery(p, self.prompts[p] + gen[r], chain, tokens, children))
        self._pending = out
        return out

    def advance(self, answers: Sequence[Sequence[Any]]) -> bool:
        """Take the answers to :meth:`queries` (same order; per query one float array per chain
        node: the log-probs of that node's children) and run one search step.

        Returns:
            True when the search is finished (then :meth:`output` holds the result).

        Raises:
            ValueError: a wrong number or shape of answers, or NaN log-probs.
        """
        if self.done:
            raise ValueError("the search is finished")
        if len(answers) != len(self._pending):
            raise ValueError(f"{len(answers)} answers for {len(self._pending)} queries")
        for query, answer in zip(self._pending, answers, strict=True):
            if len(answer) != len(query.nodes):
                raise ValueError(
                    f"{len(answer)} log-prob arrays for a chain of {len(query.nodes)} nodes"
                )
            for node, lp in zip(query.nodes, answer, strict=True):
                self.known[(query.prompt, node)] = np.asarray(lp, dtype=np.float64)
        self._pending = []
        active = self.active.tolist()
        child_logprobs = [
            None if n < 0 else self.known[(self._canonical[active[r // self.beams_now]], n)]
            for r, n in enumerate(self.run_nodes.tolist())
        ]
        K, C = self.K, 2 * self.K
        d = self.decoding
        logits = self.compact.logits(self.run_nodes.numpy(), child_logprobs)
        f = self.filters
        cand = checked_beam_step(
            self.compact.compact,
            logits,
            self.run_scores,
            self.run_nodes,
            beams=self.beams_now,
            num_candidates=C,
            alpha=d.alpha,
            temperature=1.0,  # the engine returns raw log-probs at temperature 1
            renormalize=d.renormalize,
            filters=f,
            filter_rows=self.active if f is not None and f.num_rows > 1 else None,
        )
        if bool(torch.isnan(cand.score).any()):
            raise ValueError("the engine returned NaN log-probs")
        valid = (cand.node >= 0) & (cand.score > NEG_INF)
        leaf = valid & self._is_leaf[cand.node.clamp(min=0).long()]

        running = valid & ~leaf
        pick = torch.sort(
            torch.where(running, cand.score, NEG_INF), dim=1, descending=True, stable=True
        )[1][:, :K]
        live = running.gather(1, pick)
        next_scores = torch.where(live, cand.score.gather(1, pick), NEG_INF)
        next_nodes = torch.where(live, cand.node.gather(1, pick), -1)
        src = torch.where(live, cand.beam.gather(1, pick).long(), 0)
        columns = torch.where(live, cand.token.gather(1, pick), -1)
        tokens = torch.where(live, self.compact.tokens_of_columns(columns), self.pad)

        new_leaf = leaf & self._first_k
        stopped = _finish_step(
            self.fin,
            self.finisher,
            self.active,
            cand.score,
            cand.node,
            new_leaf,
            next_scores[:, 0],
            self.step + 1,
            float(self.trie.max_depth),
        )
        keep = ~stopped & live[:, 0]
        n_live = torch.where(keep, live.sum(dim=1), 0)
        n_kept, width = int(keep.sum()), int(n_live.max()) if n_live.numel() else 0
        self.steps_run += 1
        if n_kept == 0 or self.step + 1 == self.max_steps:
            self.done = True
            return True

        if n_kept < keep.shape[0]:
            kept = keep.nonzero().squeeze(1)
            src, next_scores, next_nodes, tokens = (
                t[kept] for t in (src, next_scores, next_nodes, tokens)
            )
            self.active = self.active[kept]
        else:
            kept = torch.arange(n_kept)
        if width < K:
            src, next_scores, next_nodes, tokens = (
                t[:, :width] for t in (src, next_scores, next_nodes, tokens)
            )
        rows_from = (kept.unsqueeze(1) * self.beams_now + src).reshape(-1)
        self.generated = torch.cat(
            (self.generated.index_select(0, rows_from), tokens.reshape(-1, 1).to(torch.int64)),
            dim=1,
        )
        self.beams_now = width
        self.run_scores = next_scores.reshape(-1).contiguous()
        self.run_nodes = next_nodes.reshape(-1).to(torch.int32).contiguous()
        self.step += 1
        return False

    # ------------------------------------------------------------------ result
    def output(self, seconds: float = 0.0) -> RecommendationOutput:
        """The result, as :func:`igdbeam.generate` returns it (``prefill_seconds`` 0: the
        engine's prompt forward is part of the first step)."""
        nodes = self.fin.nodes[:, : self.R]
        sequences, lengths = paths_of_nodes(self.trie, nodes, self.pad)
        return RecommendationOutput(
            item_ids=self.trie.item_ids_of_nodes(nodes),
            scores=self.fin.scores[:, : self.R].clone(),
            sequences=sequences,
            lengths=lengths,
            nodes=nodes.clone(),
            seconds=seconds,
        )
