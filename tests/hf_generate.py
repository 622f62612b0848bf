"""A test double for ``igdbeam.generate``: trie-constrained beam search via transformers.

It uses ``prefix_allowed_tokens_fn`` (no IG reweighting, so ``alpha`` is ignored) and maps the
returned sequences to catalog items through the trie, like the real ``igdbeam.generate``. It lets
the pipeline's tests and timings run before the decoding module is merged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Output:
    item_ids: torch.Tensor
    scores: torch.Tensor
    sequences: torch.Tensor


def hf_generate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    trie: Any,
    num_beams: int = 10,
    alpha: float = 0.0,
    length_penalty: float = 0.0,
) -> Output:
    off = trie.array("child_offsets").tolist()
    tok = trie.array("token").tolist()
    width = input_ids.shape[1]

    def allowed(_batch: int, seq: torch.Tensor) -> list[int]:
        node = 0
        for t in seq[width:].tolist():
            lo, hi = off[node], off[node + 1]
            kids = tok[lo:hi]
            if t not in kids:
                return [int(model.config.eos_token_id)]
            node = lo + kids.index(t)
        lo, hi = off[node], off[node + 1]
        return tok[lo:hi] or [int(model.config.eos_token_id)]

    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        num_beams=num_beams,
        num_return_sequences=num_beams,
        max_new_tokens=trie.max_depth,
        length_penalty=length_penalty,
        do_sample=False,
        early_stopping=True,
        prefix_allowed_tokens_fn=allowed,
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=model.config.eos_token_id,
    )
    gen = out.sequences[:, width:]
    rows = []
    for r in gen.tolist():
        path = []
        for t in r:
            path.append(t)
            if t == model.config.eos_token_id:
                break
        rows.append(path)
    nodes = trie.walk(rows)
    items = trie.item_ids_of_nodes(nodes).view(input_ids.shape[0], num_beams)
    return Output(items, out.sequences_scores.view(input_ids.shape[0], num_beams), out.sequences)
