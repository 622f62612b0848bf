"""Independent references for IGD decoding: a per-beam Python processor, the fused beam step in
float64, and a brute-force scorer.

Nothing here uses igdbeam. The processor follows the public reference code's style (a Python
loop over beams, a dict trie, ``prefix_allowed_tokens_fn``-like lookups); the scorer rates every
item path by teacher forcing, which is what a beam search with a large enough beam must find.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from transformers import LogitsProcessor

from oracles.trie import ReferenceTrie


class ReferenceIGDProcessor(LogitsProcessor):
    """Per-beam Python IGD processor over a :class:`ReferenceTrie` (slow, obviously correct)."""

    def __init__(
        self,
        trie: ReferenceTrie,
        prompt_length: int,
        alpha: float = 0.0,
        renormalize: bool = False,
        eos_token_id: int | None = None,
    ) -> None:
        self.trie = trie
        self.prompt_length = prompt_length
        self.alpha = alpha
        self.renormalize = renormalize
        self.eos_token_id = eos_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = torch.full_like(scores, -math.inf)
        for r in range(input_ids.shape[0]):
            prefix = tuple(input_ids[r, self.prompt_length :].tolist())
            if prefix not in self.trie.below:
                continue
            children = self.trie.children.get(prefix, [])
            if not children:
                if self.eos_token_id is not None:
                    out[r, self.eos_token_id] = 0.0
                continue
            logp = {t: float(scores[r, t]) for t in children}
            if self.renormalize:
                m = max(logp.values())
                z = m + math.log(sum(math.exp(v - m) for v in logp.values()))
                logp = {t: v - z for t, v in logp.items()}
            for t in children:
                w = 1.0 - self.alpha * self.trie.normalized_info_gain(prefix, t)
                out[r, t] = w * logp[t]
        scores.copy_(out)
        return scores


def prefix_allowed_tokens_fn(
    trie: ReferenceTrie, prompt_length: int, eos_token_id: int
) -> Callable:
    """The public reference code's constraint: a ``prefix_allowed_tokens_fn`` over a dict trie.

    Transformers rejects an empty list, so complete (or off-trie) prefixes allow only EOS.
    """

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        prefix = tuple(sent[prompt_length:].tolist())
        return trie.children.get(prefix) or [eos_token_id]

    return allowed


def reference_beam_step(
    ref: ReferenceTrie,
    node_ids: Mapping[tuple[int, ...], int],
    logits: torch.Tensor,
    beam_scores: torch.Tensor,
    nodes: torch.Tensor,
    beams: int,
    num_candidates: int,
    alpha: float,
    *,
    temperature: float = 1.0,
    renormalize: bool = False,
    node_arrays: Sequence[Mapping[tuple[int, ...], tuple[bool, float | None]]] | None = None,
    filter_rows: Sequence[int] | None = None,
    score_weight: float = 0.0,
) -> list[list[tuple[float, float, int, int, int]]]:
    """The fused beam step in float64: per batch row, every allowed child of every active beam as
    ``(score, logp, beam, token, child node)``, sorted by (-score, beam, token), the best
    ``num_candidates`` padded with ``(-inf, -inf, -1, -1, -1)``.

    ``node_ids`` maps each prefix to the native node id (used only to name nodes). With item
    filters, ``node_arrays[p]`` is request ``p``'s ``{prefix: (allowed, S)}`` and
    ``filter_rows[b]`` the request of batch row ``b``: a child is kept when allowed, and its step
    gains ``score_weight * (S(child) - S(node))`` (-inf when ``S(child)`` is -inf).
    """
    prefix_of = {node: prefix for prefix, node in node_ids.items()}
    pad = (-math.inf, -math.inf, -1, -1, -1)
    out = []
    for b in range(logits.shape[0] // beams):
        arrays = None if node_arrays is None else node_arrays[filter_rows[b]]
        cands = []
        for k in range(beams):
            r = b * beams + k
            prefix = prefix_of.get(int(nodes[r]))
            if prefix is None or not ref.children.get(prefix):  # inactive, or a leaf
                continue
            row = torch.log_softmax(logits[r].double() / temperature, dim=-1)
            kids = [t for t in ref.children[prefix] if arrays is None or arrays[prefix + (t,)][0]]
            lp = {t: float(row[t]) for t in kids}
            if renormalize and kids:
                z = float(torch.logsumexp(row[kids], dim=0))
                lp = {t: v - z for t, v in lp.items()}
            for t in kids:
                step = (1.0 - alpha * ref.normalized_info_gain(prefix, t)) * lp[t]
                s_child = None if arrays is None else arrays[prefix + (t,)][1]
                if s_child == -math.inf:
                    step = -math.inf
                elif s_child is not None:
                    step += score_weight * (s_child - arrays[prefix][1])
                cands.append((float(beam_scores[r]) + step, lp[t], k, t, node_ids[prefix + (t,)]))
        cands.sort(key=lambda c: (-c[0], c[2], c[3]))
        out.append(cands[:num_candidates] + [pad] * max(0, num_candidates - len(cands)))
    return out


@torch.no_grad()
def brute_force_scores(
    model: torch.nn.Module,
    prompt: Sequence[int],
    trie: ReferenceTrie,
    alpha: float,
    length_penalty: float,
    renormalize: bool = False,
) -> dict[tuple[int, ...], float]:
    """Score every distinct item path after ``prompt`` by teacher forcing (float64 sums).

    ``score = sum_t (1 - alpha * IG~_t) * logp_t / len ** length_penalty`` with ``logp`` the
    model's log-softmax over the full vocabulary (renormalised over the siblings if asked).
    """
    paths = sorted(set(trie.paths))
    width = max(len(p) for p in paths)
    rows = [list(prompt) + list(p) + [0] * (width - len(p)) for p in paths]
    logits = model(torch.tensor(rows, dtype=torch.long)).logits.float()
    logp_all = torch.log_softmax(logits, dim=-1).double()
    out: dict[tuple[int, ...], float] = {}
    for i, path in enumerate(paths):
        total = 0.0
        for d, tok in enumerate(path):
            row = logp_all[i, len(prompt) + d - 1]
            lp = float(row[tok])
            prefix = path[:d]
            if renormalize:
                sib = trie.children[prefix]
                lp -= float(torch.logsumexp(row[sib], dim=0))
            w = 1.0 - alpha * trie.normalized_info_gain(prefix, tok)
            total += w * lp
        out[path] = total / (len(path) ** length_penalty)
    return out


def hf_hypotheses(
    sequences: torch.Tensor,
    sequence_scores: torch.Tensor,
    prompt_length: int,
    trie: ReferenceTrie,
    batch: int,
) -> list[list[tuple[tuple[int, ...], float]]]:
    """Split ``model.generate`` beam output into per-prompt ``(item path, score)`` lists.

    Only real hypotheses (score > -1e8) are kept: transformers' ``-1e9`` initial beams can leak
    junk into its output when fewer than ``num_beams`` items exist. A hypothesis's path is its
    generated tokens up to the first complete item path.
    """
    per = sequences.shape[0] // batch
    out: list[list[tuple[tuple[int, ...], float]]] = []
    for b in range(batch):
        hyps = []
        for k in range(per):
            score = float(sequence_scores[b * per + k])
            if score <= -1e8:
                continue
            tokens = sequences[b * per + k, prompt_length:].tolist()
            path: tuple[int, ...] = ()
            for t in tokens:
                path += (t,)
                if path in trie.items_of_leaf:
                    break
            assert path in trie.items_of_leaf, f"hypothesis {tokens} is not an item path"
            hyps.append((path, score))
        out.append(hyps)
    return out
