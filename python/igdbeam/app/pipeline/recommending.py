"""Batched recommendation for dataset rows, with one or several decoding methods at once.

:func:`recommend_many` decodes the rows with several decoding settings at once. With the default
decoder it calls :func:`igdbeam.generate_many`, so each batch of prompts goes through the model
once for all methods and methods that differ only in length penalty share one beam search;
any other ``generate_fn`` (same signature as :func:`igdbeam.generate`) is called once per
method. :func:`~igdbeam.app.pipeline.sharding.recommend_many_sharded` splits the rows across
``accelerate`` processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from igdbeam.app.pipeline.inputs import GenerateFn, encode_prompts, left_pad
from igdbeam.app.pipeline.row_filters import RowFilters
from igdbeam.data.bigrec_csv import Sample

# Each method's igdbeam.Decoding fields (generate's keywords: floats, bools and strings).
MethodSettings = Mapping[str, Mapping[str, Any]]


@dataclass
class Recommendations:
    """Top-K catalog positions (``-1`` = none) and beam scores for each row, with timing.

    ``seconds`` is the decoding wall time of this method. Methods decoded together by
    :func:`recommend_many` each count their beam search (a search shared by several methods in
    full for each) plus the prompt forward they all share; ``extra`` then holds
    ``prefill_seconds`` (that shared forward) and ``shared_search_with`` (the other methods of
    the same search).
    """

    item_ids: np.ndarray
    scores: np.ndarray
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _shared_search_partners(methods: MethodSettings) -> dict[str, list[str]]:
    """Methods that :func:`igdbeam.generate_many` decodes in the same search as each method."""
    from igdbeam.decoding.generate import Decoding

    groups: dict[tuple[float, float, bool], list[str]] = {}
    for name, settings in methods.items():
        groups.setdefault(Decoding(**settings).search_key(), []).append(name)
    return {n: [m for m in g if m != n] for g in groups.values() for n in g}


def recommend_many(
    model: Any,
    tokenizer: Any,
    trie: Any,
    samples: Sequence[Sample],
    methods: MethodSettings,
    *,
    template: str = "igd",
    num_beams: int = 10,
    batch_size: int = 8,
    max_prompt_tokens: int = 512,
    max_history_items: int | None = None,
    progress: bool = True,
    desc: str | None = None,
    generate_fn: GenerateFn | None = None,
    exclude_item_ids: Sequence[Sequence[int]] | None = None,
    item_scores: Any = None,
    item_score_weight: float = 1.0,
) -> dict[str, Recommendations]:
    """Decode the top ``num_beams`` items of every sample with each method's settings.

    ``methods`` maps a name to :class:`igdbeam.Decoding` fields (``alpha``, ``length_penalty``,
    ...). Prompts are sorted by length (less padding), batched with left padding and decoded; the
    results come back in the samples' order.

    Args:
        model / tokenizer / trie: the LM, its tokenizer and the catalog trie (same device).
        samples: the rows to recommend for.
        methods: ``{name: settings}``.
        template / max_prompt_tokens / max_history_items: how prompts are built.
        num_beams: K, recommendations per row.
        batch_size: prompts decoded together.
        progress: a tqdm bar over the rows.
        desc: the bar's label (default: the method names).
        generate_fn: a decoder with :func:`igdbeam.generate`'s signature, called once per
            method; None or :func:`igdbeam.generate` itself take the shared
            :func:`igdbeam.generate_many` path.
        exclude_item_ids: per sample, trie item ids (catalog positions) that must not be
            recommended, e.g. :func:`history_exclusions` (``--exclude-history``); passed to the
            decoder as ``item_mask`` (see :mod:`igdbeam.ops.node_filters`).
        item_scores: collaborative log-scores ``[len(samples), num_items]`` (one row per
            sample) or ``[num_items]`` (every sample), e.g. :func:`popularity_log_scores`;
            passed to the decoder with ``item_score_weight``.

    Returns:
        ``{name: Recommendations}`` in the order of ``methods``.
    """
    if not methods:
        raise ValueError("no decoding methods given")
    from igdbeam.decoding.generate import generate, generate_many

    decoder = generate if generate_fn is None else generate_fn
    shared = decoder is generate
    names = list(methods)
    prompts = encode_prompts(tokenizer, samples, template, max_prompt_tokens, max_history_items)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    device = next(model.parameters()).device
    row_filters = RowFilters(trie, len(samples), exclude_item_ids, item_scores, item_score_weight)
    ids_out = {n: np.full((len(samples), num_beams), -1, dtype=np.int64) for n in names}
    sc_out = {n: np.full((len(samples), num_beams), -math.inf, dtype=np.float64) for n in names}
    seconds = dict.fromkeys(names, 0.0)
    prefill = 0.0
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    bar = tqdm(total=len(samples), desc=desc or "+".join(names), disable=not progress, unit="user")
    with torch.no_grad():
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            input_ids, mask = left_pad([prompts[i] for i in idx], pad_id)
            input_ids, mask = input_ids.to(device), mask.to(device)
            if shared:
                outs = generate_many(
                    model,
                    input_ids,
                    mask,
                    trie=trie,
                    decodings=[dict(methods[n]) for n in names],
                    num_beams=num_beams,
                    **row_filters.kwargs(idx),
                )
                prefill += outs[0].prefill_seconds
                for n, out in zip(names, outs, strict=True):
                    seconds[n] += out.seconds
            else:
                outs = []
                for n in names:
                    t0 = time.perf_counter()
                    outs.append(
                        decoder(
                            model,
                            input_ids,
                            mask,
                            trie=trie,
                            num_beams=num_beams,
                            **methods[n],
                            **row_filters.kwargs(idx),
                        )
                    )
                    seconds[n] += time.perf_counter() - t0
            for n, out in zip(names, outs, strict=True):
                items = torch.as_tensor(out.item_ids).cpu().numpy()
                scores = torch.as_tensor(out.scores).float().cpu().numpy()
                k = min(num_beams, items.shape[1])
                ids_out[n][idx, :k] = items[:, :k]
                sc_out[n][idx, :k] = scores[:, :k]
            bar.update(len(idx))
    bar.close()
    partners = _shared_search_partners(methods) if shared else {}
    result = {}
    for n in names:
        extra: dict[str, Any] = {}
        if shared:
            extra = {"prefill_seconds": prefill, "shared_search_with": partners[n]}
        result[n] = Recommendations(ids_out[n], sc_out[n], seconds[n] + prefill, extra)
    return result


def recommend(
    model: Any,
    tokenizer: Any,
    trie: Any,
    samples: Sequence[Sample],
    *,
    alpha: float = 0.0,
    length_penalty: float = 0.0,
    desc: str = "recommending",
    **kwargs: Any,
) -> Recommendations:
    """Decode the top ``num_beams`` items for each sample with one setting.

    :func:`recommend_many` with the single method ``{"alpha": alpha, "length_penalty":
    length_penalty}``; ``kwargs`` are its keywords (``num_beams``, ``batch_size``, ...).
    """
    methods = {desc: {"alpha": alpha, "length_penalty": length_penalty}}
    return recommend_many(model, tokenizer, trie, samples, methods, desc=desc, **kwargs)[desc]
