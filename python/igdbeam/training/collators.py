"""Collators for completion-only fine-tuning and for the CFT baseline's second prompt.

Features are dicts of token ids: ``prompt_ids`` (the prompt, history included) and
``completion_ids`` (the target item's tokens, terminator included). Labels are ``ignore_index`` on
the prompt and the padding, so the loss sees only the completion.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

__all__ = ["CFTCollator", "CompletionCollator"]


def _ids(feature: Mapping[str, Any], key: str, index: int) -> list[int]:
    try:
        value = feature[key]
    except KeyError:
        raise ValueError(
            f"feature {index} has no {key!r}; features need 'prompt_ids' and 'completion_ids' "
            "(lists of token ids)"
        ) from None
    return value.tolist() if isinstance(value, torch.Tensor) else [int(t) for t in value]


def _pad(rows: Sequence[list[int]], value: int, side: str, multiple: int | None) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    if multiple:
        width = -(-width // multiple) * multiple
    out = torch.full((len(rows), width), value, dtype=torch.int64)
    for i, r in enumerate(rows):
        if not r:
            continue
        if side == "right":
            out[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
        else:
            out[i, width - len(r) :] = torch.tensor(r, dtype=torch.int64)
    return out


class CompletionCollator:
    """Pads ``prompt_ids + completion_ids`` into ``input_ids`` / ``attention_mask`` / ``labels``.

    Args:
        pad_token_id: id written on padding positions of ``input_ids``.
        ignore_index: label of prompt and padding positions.
        padding_side: ``"right"`` (default) or ``"left"``.
        pad_to_multiple_of: round the padded length up to a multiple of this.
        max_length: when given, drop prompt tokens from the left so a row fits (the completion
            is never truncated; a completion longer than ``max_length`` raises ValueError).
    """

    def __init__(
        self,
        pad_token_id: int,
        *,
        ignore_index: int = -100,
        padding_side: str = "right",
        pad_to_multiple_of: int | None = None,
        max_length: int | None = None,
    ) -> None:
        """Store the options; see the class docstring."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.pad_token_id = int(pad_token_id)
        self.ignore_index = int(ignore_index)
        self.padding_side = padding_side
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_length = max_length

    def encode(
        self, prompt: list[int], completion: list[int], index: int
    ) -> tuple[list[int], list[int]]:
        """Return ``(input_ids, labels)`` of one row (prompt truncated from the left if needed)."""
        if not completion:
            raise ValueError(f"feature {index} has an empty completion")
        if self.max_length is not None:
            if len(completion) > self.max_length:
                raise ValueError(
                    f"feature {index}: completion of {len(completion)} tokens exceeds "
                    f"max_length={self.max_length}"
                )
            keep = self.max_length - len(completion)
            prompt = prompt[max(0, len(prompt) - keep) :] if keep > 0 else []
        return prompt + completion, [self.ignore_index] * len(prompt) + completion

    def _batch(
        self, rows: list[tuple[list[int], list[int]]], prefix: str = ""
    ) -> dict[str, torch.Tensor]:
        ids = [r[0] for r in rows]
        labels = [r[1] for r in rows]
        mult, side = self.pad_to_multiple_of, self.padding_side
        return {
            f"{prefix}input_ids": _pad(ids, self.pad_token_id, side, mult),
            f"{prefix}attention_mask": _pad([[1] * len(r) for r in ids], 0, side, mult),
            f"{prefix}labels": _pad(labels, self.ignore_index, side, mult),
        }

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate features with ``prompt_ids`` and ``completion_ids`` into a padded batch."""
        rows = [
            self.encode(_ids(f, "prompt_ids", i), _ids(f, "completion_ids", i), i)
            for i, f in enumerate(features)
        ]
        return self._batch(rows)


class CFTCollator(CompletionCollator):
    """A :class:`CompletionCollator` that also builds the CFT baseline's history-free prompt.

    Besides ``input_ids`` / ``attention_mask`` / ``labels`` it returns ``cf_input_ids``,
    ``cf_attention_mask`` and ``cf_labels``: the same completion after a copy of the prompt with
    the user's history removed. That prompt is the feature's ``cf_prompt_ids`` or, when
    ``history_free_prompt`` is given, ``history_free_prompt(feature)`` (a list of token ids).
    Use it with ``IGDTrainer(loss="cft")`` and ``TrainingArguments(remove_unused_columns=False)``.

    Args:
        pad_token_id, ignore_index, padding_side, pad_to_multiple_of, max_length: as in
            :class:`CompletionCollator`.
        history_free_prompt: optional ``feature -> token ids`` of the prompt without history.
    """

    def __init__(
        self,
        pad_token_id: int,
        *,
        history_free_prompt: Callable[[Mapping[str, Any]], Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> None:
        """Store the options; see the class docstring."""
        super().__init__(pad_token_id, **kwargs)
        self.history_free_prompt = history_free_prompt

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate the real and the history-free prompts, each with the feature's completion."""
        batch = super().__call__(features)
        cf_rows = []
        for i, f in enumerate(features):
            if self.history_free_prompt is not None:
                cf_prompt = [int(t) for t in self.history_free_prompt(f)]
            else:
                cf_prompt = _ids(f, "cf_prompt_ids", i)
            cf_rows.append(self.encode(cf_prompt, _ids(f, "completion_ids", i), i))
        batch.update(self._batch(cf_rows, prefix="cf_"))
        return batch
