"""Input preparation and checks of :func:`igdbeam.generate`: the decoding settings, the
prompt / mask / trie checks against the model, the prompt forward and the state each beam search
starts from."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from igdbeam.decoding.arguments import check_flag, check_real
from igdbeam.decoding.beam_search import SearchInputs
from igdbeam.decoding.kv_cache import shared_prefix_kwargs
from igdbeam.errors import VocabularyError
from igdbeam.ops.decode_steps import check_vocab

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie


def model_device(model: Any) -> torch.device:
    """The device of the model's parameters."""
    device = getattr(model, "device", None)
    if device is None:
        device = next(model.parameters()).device
    return torch.device(device)


def output_vocab(model: Any) -> int | None:
    """Rows of the model's output embedding (its config's ``vocab_size`` without one)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[0])
    return getattr(getattr(model, "config", None), "vocab_size", None)


def input_vocab(model: Any) -> int | None:
    """Rows of the model's input embedding (its config's ``vocab_size`` without one): the token
    ids the model accepts."""
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embed, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[0])
    return getattr(getattr(model, "config", None), "vocab_size", None)


def _check_early_stopping(early_stopping: Any) -> bool | str:
    """``True``, ``False`` or ``"never"``; a number (``1`` equals ``True``) is refused, as a
    truthy value that is not ``True`` would silently select the heuristic."""
    if isinstance(early_stopping, bool | np.bool_):
        return bool(early_stopping)
    if isinstance(early_stopping, str) and early_stopping == "never":
        return "never"
    raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")


def check_pad_token_id(model: Any, pad_token_id: int) -> int:
    """Raise VocabularyError unless ``pad_token_id`` is a token the model accepts: it pads the
    returned ``sequences`` and is the input of empty beam slots."""
    vocab = input_vocab(model)
    if vocab is not None and pad_token_id >= vocab:
        raise VocabularyError(
            f"pad_token_id {pad_token_id} is outside the model's vocabulary [0, {vocab}); "
            "pass a token id of the model's tokenizer (e.g. tokenizer.pad_token_id)"
        )
    return pad_token_id


def cache_field_name() -> str:
    """Name of the KV-cache argument and output field: ``cache`` in recent transformers 5.x,
    ``past_key_values`` before the rename."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


@dataclass(frozen=True)
class Decoding:
    """One decoding setting for :func:`~igdbeam.generate_many` (the keywords of
    :func:`~igdbeam.generate`).

    Attributes:
        alpha: IGD debiasing strength in [0, 1] (0: plain constrained beam search).
        length_penalty: finished scores are divided by ``generated_len ** length_penalty``
            (1: BIGRec-style, 0: D3-style).
        early_stopping: ``False`` (transformers' default), ``"never"`` (exact) or ``True``.
        renormalize: renormalise over each beam's children before weighting.
        temperature: > 0, divides the logits before the log-softmax.
    """

    alpha: float = 0.0
    length_penalty: float = 0.0
    early_stopping: bool | str = False
    renormalize: bool = False
    temperature: float = 1.0

    def search_key(self) -> tuple[float, float, bool]:
        """What decides which beams run: decodings with equal keys share one beam search."""
        return (float(self.alpha), float(self.temperature), bool(self.renormalize))

    def checked(self) -> Decoding:
        """Return a copy with validated, normalised values.

        Raises:
            ValueError: naming the field: ``alpha`` not a real number in [0, 1],
                ``length_penalty`` not a finite real number, ``early_stopping`` not ``True``,
                ``False`` or ``"never"``, ``renormalize`` not a bool, ``temperature`` not a
                finite real number > 0 (bools and strings are refused, never converted).
        """
        return Decoding(
            alpha=check_real("alpha", self.alpha, low=0.0, high=1.0),
            length_penalty=check_real("length_penalty", self.length_penalty),
            early_stopping=_check_early_stopping(self.early_stopping),
            renormalize=check_flag("renormalize", self.renormalize),
            temperature=check_real("temperature", self.temperature, low=0.0, low_open=True),
        )


def check_prompts(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie
) -> torch.device:
    """Validate the prompts, mask and trie against the model; return the model's device."""
    if not hasattr(model, "prepare_inputs_for_generation"):
        raise ValueError(
            "model must be a transformers generative model (it needs prepare_inputs_for_generation)"
        )
    device = model_device(model)
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
    vocab = output_vocab(model)
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
    return device


def default_pad_token_id(model: Any) -> int:
    gen_cfg = getattr(model, "generation_config", None)
    pad = getattr(gen_cfg, "pad_token_id", None)
    if pad is None:
        eos = getattr(gen_cfg, "eos_token_id", None)
        pad = (eos[0] if isinstance(eos, list | tuple) else eos) if eos else 0
    return int(pad)


def prefill(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    model_kwargs: dict[str, Any],
) -> SearchInputs:
    """Run the prompts through the model once, preparing inputs as transformers' generate does."""
    from transformers import DynamicCache

    B, L = input_ids.shape
    device = input_ids.device
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
    return SearchInputs(outputs.logits[:, -1, :], kwargs, cache_key)


def _fork(start: SearchInputs) -> SearchInputs:
    """An independent copy of the prompt state (the search reorders its KV cache in place)."""
    kwargs = dict(start.model_kwargs)
    kwargs[start.cache_key] = copy.deepcopy(start.model_kwargs[start.cache_key])
    return SearchInputs(start.logits, kwargs, start.cache_key)


def search_start(start: SearchInputs, kv_cache: str, *, last: bool) -> SearchInputs:
    """The state one beam search consumes: a shared-prefix cache adopting the prompt KV (no
    copy), else the prompt cache itself (last search) or a copy of it."""
    if kv_cache == "shared_prefix":
        kwargs = shared_prefix_kwargs(start.model_kwargs, start.cache_key)
        return SearchInputs(start.logits, kwargs, start.cache_key)
    return start if last else _fork(start)


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
