"""Completion and CFT collators: exact padded batches."""

from __future__ import annotations

import pytest
import torch

from igdbeam import CFTCollator, CompletionCollator

I = -100  # noqa: E741
FEATURES = [
    {"prompt_ids": [1, 30, 31, 40], "completion_ids": [10, 11, 2], "cf_prompt_ids": [1, 40]},
    {"prompt_ids": [1, 41], "completion_ids": [20, 2], "cf_prompt_ids": [1, 41]},
]


def test_completion_collator_right_padding() -> None:
    batch = CompletionCollator(0)(FEATURES)
    assert batch["input_ids"].tolist() == [[1, 30, 31, 40, 10, 11, 2], [1, 41, 20, 2, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 7, [1, 1, 1, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[I, I, I, I, 10, 11, 2], [I, I, 20, 2, I, I, I]]
    assert all(t.dtype == torch.int64 for t in batch.values())


def test_completion_collator_left_padding_multiple_and_truncation() -> None:
    batch = CompletionCollator(0, padding_side="left", pad_to_multiple_of=4, max_length=5)(FEATURES)
    assert batch["input_ids"].tolist() == [
        [0, 0, 0, 31, 40, 10, 11, 2],
        [0, 0, 0, 0, 1, 41, 20, 2],
    ]
    assert batch["labels"].tolist() == [[I, I, I, I, I, 10, 11, 2], [I, I, I, I, I, I, 20, 2]]
    with pytest.raises(ValueError, match="exceeds max_length=2"):
        CompletionCollator(0, max_length=2)(FEATURES)
    with pytest.raises(ValueError, match="has no 'completion_ids'"):
        CompletionCollator(0)([{"prompt_ids": [1]}])
    with pytest.raises(ValueError, match="padding_side"):
        CompletionCollator(0, padding_side="middle")


def test_cft_collator() -> None:
    batch = CFTCollator(0)(FEATURES)
    assert batch["cf_input_ids"].tolist() == [[1, 40, 10, 11, 2], [1, 41, 20, 2, 0]]
    assert batch["cf_labels"].tolist() == [[I, I, 10, 11, 2], [I, I, 20, 2, I]]
    assert batch["cf_attention_mask"].tolist() == [[1] * 5, [1, 1, 1, 1, 0]]
    assert batch["labels"].tolist() == CompletionCollator(0)(FEATURES)["labels"].tolist()
    built = CFTCollator(0, history_free_prompt=lambda f: f["prompt_ids"][-1:])(FEATURES)
    assert built["cf_input_ids"].tolist() == [[40, 10, 11, 2], [41, 20, 2, 0]]
