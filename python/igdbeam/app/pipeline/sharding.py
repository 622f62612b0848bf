"""Recommending with the rows split across ``accelerate`` processes, results gathered."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from igdbeam.app.pipeline.recommending import MethodSettings, Recommendations, recommend_many
from igdbeam.data.bigrec_csv import Sample


def _shard_row_kwargs(kwargs: Mapping[str, Any], mine: list[int], num_rows: int) -> dict[str, Any]:
    """The per-row keywords of :func:`recommend_many` restricted to one process's rows."""
    out: dict[str, Any] = {}
    exclude = kwargs.get("exclude_item_ids")
    if exclude is not None:
        out["exclude_item_ids"] = [exclude[i] for i in mine]
    scores = kwargs.get("item_scores")
    if scores is not None and np.ndim(scores) == 2 and len(scores) == num_rows:
        out["item_scores"] = np.asarray(scores)[mine]
    return out


def dist_state() -> Any:
    """The process group of ``accelerate launch`` / ``torchrun`` (one process when not launched).

    Without CUDA it asks accelerate for CPU processes, so that
    ``accelerate launch --multi_gpu --num_processes N`` (torchrun underneath) gives N gloo ranks
    on a CPU machine; accelerate's ``--cpu`` flag alone starts one process unless MPI is set up.
    """
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def recommend_many_sharded(
    model: Any,
    tokenizer: Any,
    trie: Any,
    samples: Sequence[Sample],
    methods: MethodSettings,
    **kwargs: Any,
) -> dict[str, Recommendations]:
    """:func:`recommend_many` with the rows split across ``accelerate`` processes, gathered.

    Each process decodes a contiguous shard (``Accelerator.split_between_processes``); the
    shards are gathered with ``gather_object`` so every process returns all rows in order. With
    a single process this is plain :func:`recommend_many`. See :func:`dist_state`.
    """
    from accelerate.utils import gather_object

    acc = dist_state()
    if acc.num_processes == 1:
        return recommend_many(model, tokenizer, trie, samples, methods, **kwargs)
    model = model.to(acc.device)
    rows = list(range(len(samples)))
    with acc.split_between_processes(rows) as mine:
        part = recommend_many(
            model,
            tokenizer,
            trie,
            [samples[i] for i in mine],
            methods,
            **{
                **kwargs,
                **_shard_row_kwargs(kwargs, list(mine), len(samples)),
                "progress": kwargs.get("progress", True) and acc.is_local_main_process,
            },
        )
        payload = [
            (
                list(mine),
                {n: (r.item_ids.tolist(), r.scores.tolist(), r.seconds) for n, r in part.items()},
            )
        ]
    gathered = gather_object(payload)
    num_beams = kwargs.get("num_beams", 10)
    result = {}
    for n in methods:
        ids_out = np.full((len(samples), num_beams), -1, dtype=np.int64)
        sc_out = np.full((len(samples), num_beams), -math.inf, dtype=np.float64)
        seconds = 0.0
        for idx, per_method in gathered:
            items, scores, secs = per_method[n]
            if idx:
                ids_out[idx] = np.asarray(items, dtype=np.int64)
                sc_out[idx] = np.asarray(scores, dtype=np.float64)
            seconds = max(seconds, secs)
        result[n] = Recommendations(ids_out, sc_out, seconds, {"num_processes": acc.num_processes})
    return result


def recommend_sharded(
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
    """:func:`recommend` with the rows split across ``accelerate`` processes, results gathered."""
    methods = {desc: {"alpha": alpha, "length_penalty": length_penalty}}
    return recommend_many_sharded(model, tokenizer, trie, samples, methods, desc=desc, **kwargs)[
        desc
    ]
