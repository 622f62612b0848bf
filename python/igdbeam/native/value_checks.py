"""The checks that read tensor values, run inside the registered ops' kernels.

The public functions check what is known without reading a tensor (types, ranks, dtypes, devices,
shapes, scalar ranges) before they call an op; under ``torch.compile`` that happens once, while
tracing. What needs the values (a label outside the vocabulary, a trie token past the scores'
columns, a filter row out of range, NaN scores, a completion that left the trie) is
checked here, by the op's kernel, when it runs: eagerly or inside a compiled graph, with no graph
break, before any pointer reaches native code. Each check runs in exactly one of the two places.
"""

from __future__ import annotations

import weakref

import torch

from igdbeam.errors import LeftTrieError, VocabularyError

__all__ = [
    "check_filter_rows",
    "check_label_values",
    "check_token_range",
    "left_trie_message",
    "raise_for_left_trie",
    "raise_for_nan_rows",
]

ROW_LEFT_TRIE, ROW_NAN = 1, 2

# (smallest, largest) token id below the root of a trie, keyed by the id of its ``token`` array:
# computed once (one device sync on CUDA) and dropped when the array is freed. (Not a
# WeakKeyDictionary: it compares colliding keys with ``==``, which tensors answer elementwise.)
_TOKEN_RANGE: dict[int, tuple[weakref.ref[torch.Tensor], tuple[int, int]]] = {}


def check_label_values(
    labels: torch.Tensor, vocab_size: int | None, ignore_index: int, name: str = "labels"
) -> None:
    """Raise VocabularyError unless every label is ``ignore_index`` or lies in ``[0, vocab_size)``.

    With ``vocab_size=None`` only negative labels other than ``ignore_index`` are rejected. One
    reduction over the batch; on a GPU it synchronises once per call.
    """
    if labels.numel() == 0:
        return
    # Fast path: one masked fill and one min/max reduction (a single sync on GPU).
    lo, hi = torch.stack(torch.aminmax(labels.masked_fill(labels == ignore_index, 0))).tolist()
    if lo >= 0 and (vocab_size is None or hi < vocab_size):
        return
    bad = (labels < 0) & (labels != ignore_index)
    if vocab_size is not None:
        bad |= labels >= vocab_size
    if bool(bad.any()):
        pos = torch.nonzero(bad)[0].tolist()
        value = int(labels[tuple(pos)])
        allowed = f"[0, {vocab_size})" if vocab_size is not None else "[0, vocab)"
        raise VocabularyError(
            f"{name}[{pos[0]}, {pos[1]}] = {value} is neither ignore_index ({ignore_index}) nor a "
            f"token id in {allowed}; check the collator's label masking and the tokenizer/model "
            "vocabulary"
        )


def left_trie_message(
    labels: torch.Tensor,
    child_offsets: torch.Tensor,
    token: torch.Tensor,
    rows: list[int],
    ignore_index: int,
) -> str:
    """Describe the first offending token of the first ``rows`` whose completion left the trie
    (``child_offsets`` and ``token`` are the trie's arrays)."""
    labels, off, tok_arr = labels.cpu(), child_offsets.cpu(), token.cpu()
    details = []
    for r in rows[:3]:
        completion = [
            (pos, tok) for pos, tok in enumerate(labels[r].tolist()) if tok != ignore_index
        ]
        tokens = [tok for _, tok in completion]
        node = 0
        where = "after the end of the completion"
        for k, (pos, tok) in enumerate(completion):
            lo, hi = int(off[node]), int(off[node + 1])
            hit = (tok_arr[lo:hi] == tok).nonzero()
            if hit.numel() == 0:
                reason = "after a complete item path" if lo == hi else "not a child of the prefix"
                where = f"position {pos} (completion token {k}): token {tok} is {reason}"
                break
            node = lo + int(hit[0])
        details.append(
            f"row {r}: {where}; completion {tokens[:12]}{' ...' if len(tokens) > 12 else ''}"
        )
    more = f" (and {len(rows) - 3} more)" if len(rows) > 3 else ""
    return (
        f"{len(rows)} row(s) {rows[:20]}{' ...' if len(rows) > 20 else ''} have a completion that "
        f"is not an item path of the trie{more}: " + "; ".join(details) + ". Check that the trie "
        "was built from the same tokenization as the completions (ItemTrie.from_titles with the "
        "prompt's context), or pass off_trie='uniform' / 'ignore'"
    )


def raise_for_left_trie(
    labels: torch.Tensor,
    child_offsets: torch.Tensor,
    token: torch.Tensor,
    row_status: torch.Tensor,
    ignore_index: int,
) -> None:
    """Raise LeftTrieError naming the rows whose status says they left the trie (if any)."""
    left = torch.nonzero(row_status == ROW_LEFT_TRIE).flatten().tolist()
    if left:
        raise LeftTrieError(left_trie_message(labels, child_offsets, token, left, ignore_index))


def check_token_range(token: torch.Tensor, vocab: int) -> None:
    """Raise VocabularyError unless every token id below the root (``token[1:]``) lies in
    ``[0, vocab)``: the kernels index score rows with them. Cached per ``token`` array."""
    cached = _TOKEN_RANGE.get(id(token))
    if cached is not None and cached[0]() is token:
        token_range = cached[1]
    else:
        if token.shape[0] > 1:
            lo, hi = torch.aminmax(token[1:])
            token_range = (int(lo), int(hi))
        else:
            token_range = (0, -1)
        _TOKEN_RANGE[id(token)] = (weakref.ref(token), token_range)
        weakref.finalize(token, _TOKEN_RANGE.pop, id(token), None)
    min_token, max_token = token_range
    if min_token < 0:
        raise VocabularyError(
            f"the trie holds the negative token id {min_token}; it is corrupt (ItemTrie.load "
            "and the ItemTrie.from_* constructors never produce one)"
        )
    if max_token >= vocab:
        raise VocabularyError(
            f"the trie holds token id {max_token} but the scores have only {vocab} columns; "
            "the trie was built for another vocabulary"
        )


def check_filter_rows(filter_rows: torch.Tensor, count: int) -> None:
    """Raise ValueError unless every filter row lies in ``[0, count)`` (CPU tensors only: on
    CUDA the check would synchronise the host, and valid rows are the caller's contract)."""
    if (
        filter_rows.device.type == "cpu"
        and filter_rows.numel()
        and not (int(filter_rows.min()) >= 0 and int(filter_rows.max()) < count)
    ):
        raise ValueError(f"filter rows must lie in [0, {count})")


def raise_for_nan_rows(row_status: torch.Tensor) -> None:
    """Raise ValueError naming the first row whose status says it met NaN scores."""
    nan = row_status == ROW_NAN
    if bool(nan.any()):
        bad = int(torch.nonzero(nan)[0, 0])
        raise ValueError(
            f"NaN scores among the allowed tokens of row {bad}; the model produced NaN logits "
            "(check its dtype and inputs)"
        )
