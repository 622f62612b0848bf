"""igdbeam.generate: trie-constrained, IG-reweighted beam search with a fused native step.

A drop-in replacement for ``model.generate`` in recommendation. Each step runs the model once on
the ``batch * num_beams`` running beams and then one native call (:func:`beam_step`) that
normalises the logits, scores only each beam's trie children, reweights them and keeps the best
``2 * num_beams`` per batch row; there is never a top-k over ``beams x vocab``. The search keeps
the semantics of transformers' vectorised beam search (see :func:`generate`) and stops as soon
as no beam can change the result, without a ``max_new_tokens`` guess.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from igdbeam.decoding.arguments import check_flag, check_id, check_int, check_real
from igdbeam.decoding.beam_search import Finisher, run_beam_search
from igdbeam.decoding.inputs import (
    Decoding,
    cache_field_name,
    check_pad_token_id,
    check_prompts,
    default_pad_token_id,
    prefill,
    search_start,
)
from igdbeam.decoding.kv_cache import resolve_kv_cache
from igdbeam.decoding.outputs import RecommendationOutput, paths_of_nodes
from igdbeam.ops.node_filters import node_filters

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie

__all__ = [
    "Decoding",
    "RecommendationOutput",
    "cache_field_name",
    "custom_generate",
    "generate",
    "generate_many",
]


@torch.no_grad()
def generate_many(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    trie: ItemTrie,
    decodings: Sequence[Decoding | Mapping[str, Any]],
    num_beams: int = 10,
    num_return_sequences: int | None = None,
    pad_token_id: int | None = None,
    max_new_tokens: int | None = None,
    kv_cache: str = "auto",
    item_mask: Any = None,
    item_scores: Any = None,
    item_score_weight: float = 1.0,
    **model_kwargs: Any,
) -> list[RecommendationOutput]:
    """Decode the same prompts with several settings, sharing all the work that can be shared.

    Returns exactly what one :func:`generate` call per entry of ``decodings`` would return, in
    order, for less: the prompts go through the model once for all settings, and settings that
    differ only in ``length_penalty`` / ``early_stopping`` (e.g. BIGRec- and D3-style decoding)
    share one beam search, because neither changes which beams keep running, only how finished
    items are scored and when a prompt stops.

    Args:
        model, input_ids, attention_mask, trie, num_beams, num_return_sequences, pad_token_id,
            max_new_tokens, kv_cache, model_kwargs: as in :func:`generate`.
        decodings: :class:`Decoding` objects or dicts of their fields.
        item_mask, item_scores, item_score_weight: as in :func:`generate`; one filter serves
            every decoding.

    Returns:
        One :class:`RecommendationOutput` per decoding. ``seconds`` is the wall time of the beam
        search that produced it (shared searches report the same time) and ``prefill_seconds``
        the prompt forward that all of them share.

    Raises:
        ValueError: as :func:`generate`, or an empty ``decodings`` (or not a list of them).

    Threads: as :func:`generate`, any number of calls may run at once on one model.
    """
    if isinstance(decodings, Decoding | Mapping | str) or not isinstance(decodings, Sequence):
        raise ValueError(
            "decodings must be a list of Decoding objects (or dicts of their fields), got "
            f"{type(decodings).__name__}"
        )
    settings = [(d if isinstance(d, Decoding) else Decoding(**d)).checked() for d in decodings]
    if not settings:
        raise ValueError("decodings is empty: give at least one Decoding")
    K = check_int("num_beams", num_beams, minimum=1)
    R = K
    if num_return_sequences is not None:
        R = check_int("num_return_sequences", num_return_sequences, minimum=1)
        if R > K:
            raise ValueError(f"num_return_sequences must lie in [1, num_beams={K}], got {R}")
    max_new = (
        None if max_new_tokens is None else check_int("max_new_tokens", max_new_tokens, minimum=1)
    )
    pad = None if pad_token_id is None else check_id("pad_token_id", pad_token_id)
    weight = check_real("item_score_weight", item_score_weight)
    check_prompts(model, input_ids, attention_mask, trie)
    pad = check_pad_token_id(model, default_pad_token_id(model) if pad is None else pad)
    filters = node_filters(
        trie,
        item_mask,
        item_scores,
        item_score_weight=weight,
        num_rows=input_ids.shape[0],
    )
    max_steps = trie.max_depth if max_new is None else min(trie.max_depth, max_new)
    cache_mode = resolve_kv_cache(model, kv_cache, input_ids.shape[1] + max_steps)

    # One search per (alpha, temperature, renormalize); its finishers are the decodings' rest.
    groups: dict[tuple[float, float, bool], list[int]] = {}
    for i, d in enumerate(settings):
        groups.setdefault(d.search_key(), []).append(i)

    t0 = time.perf_counter()
    start = prefill(model, input_ids, attention_mask, model_kwargs)
    prefill_seconds = time.perf_counter() - t0
    results: list[RecommendationOutput | None] = [None] * len(settings)
    for g, ((alpha, temperature, renormalize), members) in enumerate(groups.items()):
        t0 = time.perf_counter()
        finishers = [
            Finisher(settings[i].length_penalty, settings[i].early_stopping) for i in members
        ]
        fins = run_beam_search(
            model,
            trie,
            search_start(start, cache_mode, last=g == len(groups) - 1),
            finishers,
            num_beams=K,
            alpha=alpha,
            temperature=temperature,
            renormalize=renormalize,
            pad_token_id=pad,
            max_steps=max_steps,
            filters=filters,
        )
        seconds = time.perf_counter() - t0
        for i, fin in zip(members, fins, strict=True):
            nodes = fin.nodes[:, :R]
            sequences, lengths = paths_of_nodes(trie, nodes, pad)
            results[i] = RecommendationOutput(
                item_ids=trie.item_ids_of_nodes(nodes),
                scores=fin.scores[:, :R],
                sequences=sequences,
                lengths=lengths,
                nodes=nodes,
                seconds=seconds,
                prefill_seconds=prefill_seconds,
            )
    return [r for r in results if r is not None]


def generate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    trie: ItemTrie,
    num_beams: int = 10,
    num_return_sequences: int | None = None,
    alpha: float = 0.0,
    length_penalty: float = 0.0,
    early_stopping: bool | str = False,
    renormalize: bool = False,
    temperature: float = 1.0,
    pad_token_id: int | None = None,
    max_new_tokens: int | None = None,
    kv_cache: str = "auto",
    item_mask: Any = None,
    item_scores: Any = None,
    item_score_weight: float = 1.0,
    **model_kwargs: Any,
) -> RecommendationOutput:
    """Recommend catalog items by trie-constrained, IG-reweighted beam search (spec section 4).

    The search reproduces ``model.generate(num_beams=K, num_return_sequences=R,
    length_penalty=..., early_stopping=..., logits_processor=[IGDLogitsProcessor(trie, alpha)])``
    on every hypothesis that transformers' beam search finds on the trie:

    * step scores ``(1 - alpha * IG~(y)) * log_softmax(logits / temperature)[y]`` summed along the
      beam; only the children of each beam's trie node are scored;
    * per step the best ``2K`` candidates over all beams of a prompt are kept (score descending,
      ties by (beam, token) ascending); a candidate that reaches a leaf is a finished item and
      enters the K finished slots with ``score / generated_len ** length_penalty`` if it ranks
      among the first K candidates; the next running beams are the best K candidates that are
      not finished;
    * a prompt stops taking new items when all K slots are full and no running beam can beat the
      worst of them: with ``early_stopping=False`` (transformers' default heuristic) the bound is
      ``best_running_score / current_len ** length_penalty``, exact when ``length_penalty <= 0``;
      with ``early_stopping="never"`` it is ``best_running_score / max_len ** length_penalty``
      for ``length_penalty > 0`` with ``max_len`` the trie's deepest path, which is exact (step
      scores are never positive); ``early_stopping=True`` stops when K items are found;
    * the loop ends when every prompt has stopped or has no running beam left, so no
      ``max_new_tokens`` is needed (the trie's depth bounds it).

    Unlike transformers, rows that can no longer change the result are not run through the model:
    stopped prompts leave the batch and empty beam slots are dropped, which on real catalogs
    (most titles end within a few steps of each other, a few run long) removes a large share of
    the model calls.

    Transformers initialises beams ``1..K-1`` with ``-1e9`` and can return such junk hypotheses
    when the catalog offers fewer than K items; here those slots are ``item_ids = -1`` and
    ``scores = -inf``. A trie whose paths do not end in a terminator finishes a beam on reaching
    a leaf (transformers would need one more EOS step, which changes the length penalty).
    To compare several settings on the same prompts, :func:`generate_many` shares the work.

    **Threads.** Calls may run concurrently on one model (e.g. a server's worker threads): each
    call returns exactly what it returns alone, and no call changes the model, its config or
    the trie (each call keeps its own KV cache; the shared-prefix cache runs its attention
    through a view of the model private to the call, see :mod:`igdbeam.decoding.kv_cache`).
    PyTorch runs the calls' operators in parallel where it can; the Python parts take turns on
    the GIL. Changing the model while calls run (training it, ``model.to(...)``,
    ``set_attn_implementation``) is not safe, as with any PyTorch model.

    Args:
        model: a transformers causal LM that returns a KV cache (``model(..., use_cache=True)``
            gives ``outputs.cache``).
        input_ids: int64 ``[B, L]`` prompts, left-padded, on the model's device.
        attention_mask: ``[B, L]`` 1 for tokens, 0 for left padding; None: no padding.
        trie: the catalog, on the model's device.
        num_beams: K, an integer >= 1.
        num_return_sequences: R, an integer in [1, K]: hypotheses returned per prompt
            (default K).
        alpha: debiasing strength, a real number in [0, 1].
        length_penalty: a finite real number; finished scores are divided by
            ``generated_len ** length_penalty``.
        early_stopping: ``False`` (default, as transformers), ``"never"`` (exact) or ``True``.
        renormalize: a bool: renormalise over each beam's children before weighting.
        temperature: a finite real number > 0, divides the logits before the log-softmax.
        pad_token_id: a token id of the model (an integer in ``[0, vocab)``): pads
            ``sequences`` and feeds empty beam slots (default: the model's pad, else EOS,
            else 0).
        max_new_tokens: optional cap on the generated length, an integer >= 1 (default: the
            trie's depth).
        item_mask: bool ``[B, num_items]`` (or ``[num_items]`` for all prompts), True = the item
            may be recommended (:func:`igdbeam.exclude_items` builds one from excluded ids).
            Beams never enter a branch without an allowed item; a prompt with none gets
            ``item_ids = -1``. IG~ stays the trie's. See :mod:`igdbeam.ops.node_filters`.
        item_scores: float ``[B, num_items]`` (or ``[num_items]``) collaborative log-scores; the
            step score of child ``c`` of node ``n`` gains ``item_score_weight * (S(c) - S(n))``
            with ``S`` the log-sum-exp of the (allowed) item scores below a node, so a finished
            item's score gains ``item_score_weight * log p_cf(item)``.
        item_score_weight: the weight of ``item_scores``, a finite real number (0: ignored).
        kv_cache: ``"auto"`` (default: ``"shared_prefix"`` where supported, else
            ``"dynamic"``), ``"shared_prefix"`` (each prompt's KV kept once, its beams attend
            to it with cascade attention; Llama, Qwen2 and Mistral models, see
            :mod:`igdbeam.decoding.kv_cache`) or ``"dynamic"`` (transformers' ``DynamicCache``).
        **model_kwargs: passed to the model's forward (e.g. ``token_type_ids``).

    Returns:
        A :class:`RecommendationOutput`.

    Raises:
        ValueError: an argument of the wrong type or range, named in the message (every
            integer argument must be an integer: ``num_beams=2.7``, ``True`` or NaN is refused,
            never truncated; ``length_penalty`` and the other reals must be finite), prompts or
            trie on another device than the model, right padding, a model without a KV cache,
            NaN logits (checked on CPU), an unknown ``kv_cache`` or
            ``kv_cache="shared_prefix"`` for a model it does not support.
        InvalidIdError: ``pad_token_id`` not an integer or negative (a ValueError).
        VocabularyError: a trie built for another vocabulary, or ``pad_token_id`` outside the
            model's vocabulary (a ValueError).
    """
    decoding = Decoding(alpha, length_penalty, early_stopping, renormalize, temperature)
    return generate_many(
        model,
        input_ids,
        attention_mask,
        trie=trie,
        decodings=[decoding],
        num_beams=num_beams,
        num_return_sequences=num_return_sequences,
        pad_token_id=pad_token_id,
        max_new_tokens=max_new_tokens,
        item_mask=item_mask,
        item_scores=item_scores,
        item_score_weight=item_score_weight,
        kv_cache=kv_cache,
        **model_kwargs,
    )[0]


def custom_generate(
    model: Any,
    input_ids: torch.Tensor,
    logits_processor: Any = None,
    stopping_criteria: Any = None,
    generation_config: Any = None,
    synced_gpus: bool = False,
    *,
    trie: ItemTrie,
    alpha: float = 0.0,
    renormalize: bool = False,
    **model_kwargs: Any,
) -> RecommendationOutput:
    """Run :func:`generate` from ``model.generate(..., custom_generate=custom_generate)``.

    Transformers calls this after preparing its inputs: ``input_ids`` arrive repeated once per
    beam, and ``num_beams``, ``num_return_sequences``, ``length_penalty`` and ``early_stopping``
    are read from ``generation_config``. ``trie``, ``alpha`` and ``renormalize`` are passed to
    ``model.generate`` as keyword arguments. Extra logits processors and stopping criteria are
    not supported (the trie defines both). Returns a :class:`RecommendationOutput`.
    """
    del logits_processor, stopping_criteria
    if synced_gpus:
        raise ValueError("igdbeam.generate does not support synced_gpus")
    K = check_int("num_beams", getattr(generation_config, "num_beams", None) or 1, minimum=1)
    R = check_int(
        "num_return_sequences",
        getattr(generation_config, "num_return_sequences", None) or 1,
        minimum=1,
    )
    expand = max(K, R)
    if input_ids.shape[0] % expand:
        raise ValueError(f"expected input_ids repeated {expand} times per prompt")
    mask = model_kwargs.get("attention_mask")
    return generate(
        model,
        input_ids[::expand],
        None if mask is None else mask[::expand],
        trie=trie,
        num_beams=K,
        num_return_sequences=min(R, K),
        alpha=alpha,
        length_penalty=getattr(generation_config, "length_penalty", 1.0),
        early_stopping=getattr(generation_config, "early_stopping", False),
        renormalize=check_flag("renormalize", renormalize),
        pad_token_id=getattr(generation_config, "pad_token_id", None),
    )
