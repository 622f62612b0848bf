"""igdbeam.generate: trie-constrained, IG-reweighted beam search with a fused native step.

A drop-in replacement for ``model.generate`` in recommendation. Each step runs the model once on
the ``batch * num_beams`` running beams and then one native call (:func:`beam_step`) that
normalises the logits, scores only each beam's trie children, reweights them and keeps the best
``2 * num_beams`` per batch row; there is never a top-k over ``beams x vocab``. The search keeps
the semantics of transformers' vectorised beam search (see :func:`generate`) and stops as soon
as no beam can change the result, without a ``max_new_tokens`` guess.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from igdbeam._checks import check_unit_interval
from igdbeam.decode_ops import beam_step, check_temperature, check_vocab

if TYPE_CHECKING:
    from igdbeam.trie import ItemTrie

NEG_INF = float("-inf")


@dataclass
class RecommendationOutput:
    """The result of :func:`generate` for ``B`` prompts and ``R`` returned hypotheses each.

    Attributes:
        item_ids: int64 ``[B, R]`` catalog item id of each hypothesis, best first (the smallest
            id when several items share a path); -1 where fewer than ``R`` items were found.
        scores: float32 ``[B, R]`` final score ``sum_t w_t logp_t / len ** length_penalty``;
            ``-inf`` where ``item_ids`` is -1.
        sequences: int64 ``[B, R, T]`` the generated tokens (terminator included), padded with
            ``pad_token_id`` to the longest one.
        lengths: int64 ``[B, R]`` number of generated tokens of each hypothesis (0 for a pad).
        nodes: int32 ``[B, R]`` trie leaf of each hypothesis (-1 for a pad).
    """

    item_ids: torch.Tensor
    scores: torch.Tensor
    sequences: torch.Tensor
    lengths: torch.Tensor
    nodes: torch.Tensor


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if device is None:
        device = next(model.parameters()).device
    return torch.device(device)


def _output_vocab(model: Any) -> int | None:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[0])
    return getattr(getattr(model, "config", None), "vocab_size", None)


def _check_early_stopping(early_stopping: bool | str) -> bool | str:
    if early_stopping in (True, False, "never"):
        return early_stopping
    raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")


def _paths_of_nodes(
    trie: ItemTrie, nodes: torch.Tensor, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token paths of trie nodes (any shape), padded; returns (tokens [..., T], lengths)."""
    # Index the int32 arrays first: converting them whole would copy the catalog every call.
    parent, token = trie.array("parent"), trie.array("token")
    depth = trie.array("depth")
    if depth.is_cuda:  # CUDA indexing has no uint16 kernel
        depth = depth.to(torch.int32)
    flat = nodes.reshape(-1).to(torch.int64)
    valid = flat >= 0
    cur = flat.clamp(min=0)
    lengths = torch.where(valid, depth[cur].to(torch.int64), torch.zeros_like(cur))
    width = int(lengths.max()) if lengths.numel() else 0
    out = torch.full((flat.shape[0], width), pad_token_id, dtype=torch.int64, device=nodes.device)
    rows = torch.arange(flat.shape[0], device=nodes.device)
    pos = lengths - 1
    for _ in range(width):
        live = pos >= 0
        out[rows[live], pos[live]] = token[cur[live]].to(torch.int64)
        cur = torch.where(live, parent[cur].to(torch.int64).clamp(min=0), cur)
        pos = pos - 1
    return out.reshape(*nodes.shape, width), lengths.reshape(nodes.shape)


def cache_field_name() -> str:
    """Name of the KV-cache argument and output field: ``cache`` in recent transformers 5.x,
    ``past_key_values`` before the rename."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


@torch.no_grad()
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

    Transformers initialises beams ``1..K-1`` with ``-1e9`` and can return such junk hypotheses
    when the catalog offers fewer than K items; here those slots are ``item_ids = -1`` and
    ``scores = -inf``. A trie whose paths do not end in a terminator finishes a beam on reaching
    a leaf (transformers would need one more EOS step, which changes the length penalty).

    Args:
        model: a transformers causal LM that returns a KV cache (``model(..., use_cache=True)``
            gives ``outputs.cache``).
        input_ids: int64 ``[B, L]`` prompts, left-padded, on the model's device.
        attention_mask: ``[B, L]`` 1 for tokens, 0 for left padding; None: no padding.
        trie: the catalog, on the model's device.
        num_beams: K.
        num_return_sequences: R <= K hypotheses returned per prompt (default K).
        alpha: debiasing strength in [0, 1].
        length_penalty: finished scores are divided by ``generated_len ** length_penalty``.
        early_stopping: ``False`` (default, as transformers), ``"never"`` (exact) or ``True``.
        renormalize: renormalise over each beam's children before weighting.
        temperature: > 0, divides the logits before the log-softmax.
        pad_token_id: pads ``sequences`` (default: the model's pad, else EOS, else 0).
        max_new_tokens: optional cap on the generated length (default: the trie's depth).
        **model_kwargs: passed to the model's forward (e.g. ``token_type_ids``).

    Returns:
        A :class:`RecommendationOutput`.

    Raises:
        ValueError: ``alpha`` outside [0, 1], bad ``num_beams`` / ``num_return_sequences``,
            prompts or trie on another device than the model, right padding, a trie built for
            another vocabulary, a model without a KV cache, or NaN logits (checked on CPU).
    """
    alpha = check_unit_interval("alpha", alpha)
    temperature = check_temperature(temperature)
    early_stopping = _check_early_stopping(early_stopping)
    K = int(num_beams)
    if K < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    R = K if num_return_sequences is None else int(num_return_sequences)
    if not 1 <= R <= K:
        raise ValueError(f"num_return_sequences must lie in [1, num_beams={K}], got {R}")
    length_penalty = float(length_penalty)
    if not hasattr(model, "prepare_inputs_for_generation"):
        raise ValueError(
            "model must be a transformers generative model (it needs prepare_inputs_for_generation)"
        )
    device = _model_device(model)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError("input_ids must be an int64 tensor [batch, prompt_len]")
    if input_ids.dtype != torch.int64:
        raise ValueError(f"input_ids must have dtype int64, got {input_ids.dtype}")
    if input_ids.device != device:
        raise ValueError(
            f"input_ids are on {input_ids.device} but the model is on {device}; "
            f"move them with input_ids.to({str(device)!r})"
        )
    if trie.device != device:
        raise ValueError(
            f"the trie is on {trie.device} but the model is on {device}; "
            f"use trie = trie.to({str(device)!r})"
        )
    B, L = input_ids.shape
    if B == 0 or L == 0:
        raise ValueError(f"input_ids must hold at least one prompt token, got shape {(B, L)}")
    vocab = _output_vocab(model)
    if vocab is not None:
        check_vocab(trie, vocab)
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids "
                f"{tuple(input_ids.shape)}"
            )
        if attention_mask.device != device:
            raise ValueError(f"attention_mask is on {attention_mask.device}, the model on {device}")
        if bool((attention_mask[:, -1] == 0).any()):
            raise ValueError(
                "the prompts are right-padded; decoder-only generation needs left padding "
                "(tokenizer.padding_side = 'left')"
            )
    gen_cfg = getattr(model, "generation_config", None)
    if pad_token_id is None:
        pad_token_id = getattr(gen_cfg, "pad_token_id", None)
        if pad_token_id is None:
            eos = getattr(gen_cfg, "eos_token_id", None)
            pad_token_id = (eos[0] if isinstance(eos, list | tuple) else eos) if eos else 0
    pad_token_id = int(pad_token_id)

    # ---- model inputs, as transformers' generate prepares them ---------------------------
    from transformers import DynamicCache

    forward_params = set(inspect.signature(model.forward).parameters)
    kwargs: dict[str, Any] = dict(model_kwargs)
    if attention_mask is not None and "position_ids" in forward_params:
        position_ids = attention_mask.long().cumsum(-1) - 1
        kwargs["position_ids"] = position_ids.masked_fill(attention_mask == 0, 0)
    elif "position_ids" in forward_params:
        kwargs["position_ids"] = torch.arange(L, device=device).unsqueeze(0).expand(B, L)
    if attention_mask is not None and not bool((attention_mask == 1).all()):
        kwargs["attention_mask"] = attention_mask
    cache_key = cache_field_name()
    kwargs[cache_key] = DynamicCache(config=model.config)
    kwargs["use_cache"] = True
    if "logits_to_keep" in forward_params:
        kwargs["logits_to_keep"] = 1

    inputs = model.prepare_inputs_for_generation(input_ids, is_first_iteration=True, **kwargs)
    outputs = model(**inputs, return_dict=True)
    if outputs.get(cache_key) is None:
        raise ValueError(
            f"{type(model).__name__} returned no KV cache (outputs.{cache_key} is None); "
            "igdbeam.generate needs a model that supports use_cache=True"
        )
    kwargs = model._update_model_kwargs_for_generation(outputs, kwargs)
    logits = outputs.logits[:, -1, :]

    # ---- beam state ------------------------------------------------------------------------
    C = 2 * K
    offsets = trie.array("child_offsets")
    is_leaf_node = offsets[1:] == offsets[:-1]
    batch_base = torch.arange(B, device=device).unsqueeze(1)
    slot = torch.arange(C, device=device).unsqueeze(0)
    fin_scores = torch.full((B, K), NEG_INF, dtype=torch.float32, device=device)
    fin_nodes = torch.full((B, K), -1, dtype=torch.int32, device=device)
    stopped = torch.zeros(B, dtype=torch.bool, device=device)
    run_scores = torch.zeros(B, dtype=torch.float32, device=device)
    run_nodes = torch.zeros(B, dtype=torch.int32, device=device)
    beams_now = 1  # the first step expands the single prompt row into K beams
    max_steps = trie.max_depth if max_new_tokens is None else min(trie.max_depth, max_new_tokens)
    exact_len = float(trie.max_depth)

    for step in range(max_steps):
        cand = beam_step(
            trie,
            logits,
            run_scores,
            run_nodes,
            beams=beams_now,
            num_candidates=C,
            alpha=alpha,
            temperature=temperature,
            renormalize=renormalize,
        )
        if device.type == "cpu" and bool(torch.isnan(cand.score).any()):
            raise ValueError("the model produced NaN logits (check its dtype and inputs)")
        gen_len = step + 1
        valid = (cand.node >= 0) & (cand.score > NEG_INF)
        leaf = valid & is_leaf_node[cand.node.clamp(min=0).long()]

        # Finished items: only candidates among the first K, only while the prompt is open.
        new_fin = leaf & (slot < K) & ~stopped.unsqueeze(1)
        scaled = cand.score / (gen_len**length_penalty)
        merged_scores = torch.cat((fin_scores, torch.where(new_fin, scaled, NEG_INF)), dim=1)
        merged_nodes = torch.cat((fin_nodes, torch.where(new_fin, cand.node, -1)), dim=1)
        order = torch.sort(merged_scores, dim=1, descending=True, stable=True)[1][:, :K]
        fin_scores = merged_scores.gather(1, order)
        fin_nodes = merged_nodes.gather(1, order)

        # Running beams: the best K candidates that are not finished.
        running = valid & ~leaf
        key = torch.where(running, cand.score, NEG_INF)
        pick = torch.sort(key, dim=1, descending=True, stable=True)[1][:, :K]
        live = running.gather(1, pick)
        run_scores2d = torch.where(live, cand.score.gather(1, pick), NEG_INF)
        run_nodes2d = torch.where(live, cand.node.gather(1, pick), -1)
        src = torch.where(live, cand.beam.gather(1, pick).long(), 0)
        tokens = torch.where(live, cand.token.gather(1, pick), pad_token_id)

        # Stopping (transformers' per-prompt "improvement possible" flag, exact for tries).
        full = fin_nodes[:, K - 1] >= 0
        if early_stopping is True:
            can_improve = ~full
        else:
            bound_len = exact_len if (early_stopping == "never" and length_penalty > 0) else gen_len
            best = run_scores2d[:, 0] / (bound_len**length_penalty)
            can_improve = ~full | (best > fin_scores[:, K - 1])
        stopped = stopped | ~can_improve
        if bool((stopped | ~live[:, 0]).all()) or step + 1 == max_steps:
            break

        # Reorder (and on the first step expand) the KV cache, then run the model.
        beam_idx = (batch_base * beams_now + src).reshape(-1)
        kwargs[cache_key].reorder_cache(beam_idx)
        if beams_now == 1:
            for name in ("attention_mask", "position_ids", "token_type_ids"):
                if isinstance(kwargs.get(name), torch.Tensor):
                    kwargs[name] = kwargs[name].repeat_interleave(K, dim=0)
            beams_now = K
        run_scores = run_scores2d.reshape(-1).contiguous()
        run_nodes = run_nodes2d.reshape(-1).to(torch.int32).contiguous()
        inputs = model.prepare_inputs_for_generation(
            tokens.reshape(-1, 1), next_sequence_length=1, **kwargs
        )
        outputs = model(**inputs, return_dict=True)
        kwargs = model._update_model_kwargs_for_generation(outputs, kwargs)
        logits = outputs.logits[:, -1, :]

    nodes = fin_nodes[:, :R]
    sequences, lengths = _paths_of_nodes(trie, nodes, pad_token_id)
    return RecommendationOutput(
        item_ids=trie.item_ids_of_nodes(nodes),
        scores=fin_scores[:, :R],
        sequences=sequences,
        lengths=lengths,
        nodes=nodes,
    )


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
    K = int(getattr(generation_config, "num_beams", 1) or 1)
    R = int(getattr(generation_config, "num_return_sequences", 1) or 1)
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
        length_penalty=float(getattr(generation_config, "length_penalty", 1.0)),
        early_stopping=getattr(generation_config, "early_stopping", False),
        renormalize=renormalize,
        pad_token_id=getattr(generation_config, "pad_token_id", None),
    )
