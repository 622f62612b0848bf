"""Batched recommendation for dataset rows: prompts, the decoder, several methods, sharding.

:func:`recommend_many` decodes the rows with several decoding settings at once. With the default
decoder it calls :func:`igdbeam.generate_many`, so each batch of prompts goes through the model
once for all methods and methods that differ only in length penalty share one beam search;
any other ``generate_fn`` (same signature as :func:`igdbeam.generate`) is called once per
method. :func:`recommend_many_sharded` splits the rows across ``accelerate`` processes.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from igdbeam.data.bigrec_csv import Sample
from igdbeam.training.prompts import get_template

GenerateFn = Callable[..., Any]
MethodSettings = Mapping[str, Mapping[str, float]]


def encode_prompts(
    tokenizer: Any,
    samples: Sequence[Sample],
    template: str = "igd",
    max_prompt_tokens: int = 512,
    max_history_items: int | None = None,
) -> list[list[int]]:
    """Token ids of each sample's prompt.

    Only the last ``max_history_items`` history items are used (all when None); older items are
    dropped further until the prompt fits ``max_prompt_tokens``.
    """
    t = get_template(template)
    out = []
    for s in samples:
        hist = list(s.history_item_title)
        if max_history_items is not None:
            hist = hist[-max_history_items:]
        ids = tokenizer(t.prompt(hist), add_special_tokens=False)["input_ids"]
        while len(ids) > max_prompt_tokens and len(hist) > 1:
            hist = hist[1:]
            ids = tokenizer(t.prompt(hist), add_special_tokens=False)["input_ids"]
        out.append(list(ids))
    return out


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token rows into ``(input_ids, attention_mask)`` int64 tensors."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.int64)
    mask = torch.zeros((len(rows), width), dtype=torch.int64)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r) :] = torch.tensor(list(r), dtype=torch.int64)
            mask[i, width - len(r) :] = 1
    return ids, mask


def resolve_decoder(spec: str = "igdbeam:generate") -> GenerateFn:
    """Return the decoder named ``MODULE:FUNCTION`` (default :func:`igdbeam.generate`).

    When ``MODULE.FUNCTION`` is itself a module (e.g. ``igdbeam.decoding:generate``, the submodule ``igdbeam.decoding.generate``), its
    attribute of the same name is used.

    Raises:
        ValueError: a malformed spec or a decoder that cannot be imported.
    """
    import importlib

    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"a decoder is MODULE:FUNCTION, got {spec!r}")
    try:
        obj = getattr(importlib.import_module(module), name, None)
        if obj is None or inspect.ismodule(obj):
            obj = getattr(importlib.import_module(f"{module}.{name}"), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"cannot load the decoder {spec!r}: {exc}. igdbeam.generate comes with igdbeam's "
            "decoding module; pass another MODULE:FUNCTION with the same signature otherwise"
        ) from None
    if not callable(obj):
        raise ValueError(f"the decoder {spec!r} is not callable")
    return obj


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

    shared = generate_fn is None or generate_fn is generate
    names = list(methods)
    prompts = encode_prompts(tokenizer, samples, template, max_prompt_tokens, max_history_items)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    device = next(model.parameters()).device
    row_filters = _RowFilters(trie, len(samples), exclude_item_ids, item_scores, item_score_weight)
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
                        generate_fn(  # type: ignore[misc]
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


# --------------------------------------------------------------- item filters and CF scores
def history_exclusions(catalog: Any, samples: Sequence[Sample]) -> list[list[int]]:
    """Catalog positions (trie item ids) of each sample's history items, for
    ``exclude_item_ids`` (``--exclude-history``); history ids missing from the catalog cannot be
    recommended anyway and are skipped."""
    known = set(catalog.ids)
    return [[catalog.position(i) for i in s.history_item_id if i in known] for s in samples]


def popularity_log_scores(counts: np.ndarray) -> np.ndarray:
    """The popularity prior's item log-scores ``log(count + 1)`` (``--popularity-prior``)."""
    return np.log(np.asarray(counts, dtype=np.float64) + 1.0)


class _RowFilters:
    """Per-batch ``item_mask`` / ``item_scores`` keywords of the decoder, sliced from per-row
    inputs (``exclude_item_ids``: one list per sample; ``item_scores``: one row per sample or one
    row for all)."""

    def __init__(
        self,
        trie: Any,
        num_rows: int,
        exclude: Sequence[Sequence[int]] | None,
        scores: Any,
        weight: float,
    ) -> None:
        self.trie, self.exclude, self.weight = trie, exclude, float(weight)
        if exclude is not None and len(exclude) != num_rows:
            raise ValueError(f"exclude_item_ids has {len(exclude)} rows for {num_rows} samples")
        self.scores = None
        if scores is not None:
            t = torch.as_tensor(np.asarray(scores, dtype=np.float32))
            if t.dim() not in (1, 2) or (t.dim() == 2 and t.shape[0] != num_rows):
                raise ValueError(
                    f"item_scores must have shape [{num_rows} samples, num_items] or "
                    f"[num_items], got {tuple(t.shape)}"
                )
            self.scores = t

    def kwargs(self, idx: Sequence[int]) -> dict[str, Any]:
        from igdbeam.ops.node_filters import exclude_items

        out: dict[str, Any] = {}
        if self.exclude is not None:
            out["item_mask"] = exclude_items(self.trie, [self.exclude[i] for i in idx])
        if self.scores is not None:
            rows = self.scores if self.scores.dim() == 1 else self.scores[list(idx)]
            out["item_scores"] = rows.to(self.trie.device)
            out["item_score_weight"] = self.weight
        return out


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
    with acc.split_between_processes(rows) as mine:  # type: ignore[attr-defined]
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
