"""Shared set-up of the vLLM tests and benchmark: ML-100k prompts, the trie, the engine and the
exactness comparison against igdbeam.generate.

Sizes come from the environment so that CI runs a reduced set and a developer the full one:
``IGDBEAM_VLLM_ROWS`` (rows of the test split, default 4) and ``IGDBEAM_VLLM_FULL=1`` (every
variant: alpha 0 / 0.2 x history exclusion off / on x 10 / 50 beams).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ROWS = int(os.environ.get("IGDBEAM_VLLM_ROWS", "4"))
FULL = os.environ.get("IGDBEAM_VLLM_FULL", "0") not in ("", "0")
TIE_TOLERANCE = 1e-4


@dataclass
class MovieLensSetup:
    """Test rows of ML-100k with SmolLM2: prompts, history masks, trie, tokenizer, model folder."""

    prompts: list[list[int]]
    history_mask: torch.Tensor  # bool [rows, items], False on each row's history
    trie: Any
    tokenizer: Any
    model_path: str


def movielens_setup(rows: int = ROWS) -> MovieLensSetup:
    """The first ``rows`` test rows of ML-100k (igdbeam's default folder, all-catalog trie)."""
    from transformers import AutoTokenizer

    from igdbeam.app.assets import smollm2_checkpoint
    from igdbeam.app.pipeline import (
        build_trie,
        encode_prompts,
        history_exclusions,
        prepare_movielens,
    )
    from igdbeam.data import load_dataset
    from igdbeam.ops.node_filters import exclude_items

    ds = load_dataset(prepare_movielens("ml-100k", progress=False), splits=("train", "test"))
    path = str(smollm2_checkpoint())
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    trie = build_trie(ds, tok)
    samples = ds.split("test")[:rows]
    prompts = encode_prompts(tok, samples)
    mask = exclude_items(trie, history_exclusions(ds.catalog, samples))
    return MovieLensSetup(prompts, mask, trie, tok, path)


def engine_kwargs() -> dict[str, Any]:
    """The ``vllm.LLM`` settings of the tests: float32, prefix caching, 32-token KV blocks
    (the CPU backend's smallest), a fixed seed, eager mode (starts in seconds instead of
    minutes of graph compilation)."""
    return dict(
        dtype="float32",
        enable_prefix_caching=True,
        block_size=32,
        max_model_len=1024,
        seed=0,
        enforce_eager=True,
    )


@dataclass
class Agreement:
    """How two top-K lists agree, row by row."""

    same_rows: int
    rows: int
    tie_rows: list[int]  # rows that differ only where scores tie within TIE_TOLERANCE
    unexplained: list[int]
    max_score_diff: float  # over rows with the same items


def _tied(ids: list[int], sc: np.ndarray, item: int, p: int) -> bool:
    """Whether rank ``p`` of a list ties ``item``'s score in it, or ties the list's last kept
    score (an item that may enter or leave at a tied cut-off)."""
    if item in ids and abs(sc[ids.index(item)] - sc[p]) <= TIE_TOLERANCE:
        return True
    return bool(abs(sc[p] - sc[-1]) <= TIE_TOLERANCE)


def compare(ours: Any, ref: Any, top: int = 10) -> Agreement:
    """Compare the top ``top`` items of two RecommendationOutputs, row by row.

    A row whose item lists differ is *explained by a tie* when at every rank ``p`` where they
    differ, one list holds a score tie within ``TIE_TOLERANCE``: the other list's item at ``p``
    sits in it at a rank whose score is within the tolerance of its own score at ``p`` (two
    tied items swapped), or its score at ``p`` ties its last kept score (an item entering or
    leaving at a tied cut-off).
    """
    a_ids, b_ids = ours.item_ids[:, :top].tolist(), ref.item_ids[:, :top].tolist()
    a_sc = np.nan_to_num(ours.scores[:, :top].double().numpy(), neginf=-1e30)
    b_sc = np.nan_to_num(ref.scores[:, :top].double().numpy(), neginf=-1e30)
    same, ties, bad, diff = 0, [], [], 0.0
    for r, (a, b) in enumerate(zip(a_ids, b_ids, strict=True)):
        if a == b:
            same += 1
            live = np.array(b) >= 0
            if live.any():
                diff = max(diff, float(np.abs(a_sc[r][live] - b_sc[r][live]).max()))
            continue
        explained = all(
            _tied(a, a_sc[r], b[p], p) or _tied(b, b_sc[r], a[p], p)
            for p in range(top)
            if a[p] != b[p]
        )
        (ties if explained else bad).append(r)
    return Agreement(same, len(a_ids), ties, bad, diff)
