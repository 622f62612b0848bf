"""Inputs of recommending: prompt token ids, left padding and the decoder named on the CLI."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from igdbeam.data.bigrec_csv import Sample
from igdbeam.decoding.inputs import left_pad
from igdbeam.training.prompts import fit_prompt, get_template

GenerateFn = Callable[..., Any]
__all__ = ["GenerateFn", "encode_prompts", "left_pad", "resolve_decoder"]


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
        out.append(fit_prompt(tokenizer, hist, t, max_prompt_tokens)[1])
    return out


def resolve_decoder(spec: str = "igdbeam:generate") -> GenerateFn:
    """Return the decoder named ``MODULE:FUNCTION`` (default :func:`igdbeam.generate`).

    When ``MODULE.FUNCTION`` is itself a module (e.g. ``igdbeam.decoding:generate``, the
    submodule ``igdbeam.decoding.generate``), its attribute of the same name is used.

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
