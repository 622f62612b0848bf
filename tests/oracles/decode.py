"""Independent references for IGD decoding: a per-beam Python processor and a brute-force scorer.

Nothing here uses igdbeam. The processor follows the public reference code's style (a Python
loop over beams, a dict trie, ``prefix_allowed_tokens_fn``-like lookups); the scorer rates every
item path by teacher forcing, which is what a beam search with a large enough beam must find.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

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
