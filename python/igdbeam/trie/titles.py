"""Item titles to trie paths: tokenized in context, exactly as the model emits them after the
prompt (spec 1), then built into a trie's arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from igdbeam.trie.build import Weights, build_from_paths
from igdbeam.trie.layout import TrieData


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    out = tokenizer(texts, add_special_tokens=False)
    return [list(ids) for ids in out["input_ids"]]


def tokenize_titles_in_context(
    titles: Sequence[str],
    tokenizer: Any,
    *,
    context: str = "",
    prefix: str = "",
    suffix: str = "\n",
    eos: bool | int = True,
    batch_size: int = 4096,
    progress: bool | None = None,
) -> list[list[int]]:
    """Return each title's token path: ``prefix + title + suffix`` encoded after ``context``.

    BPE merges can cross the boundary between prompt and response, so each title is encoded as
    ``context + prefix + title + suffix``; the context's own tokens must be a prefix of the
    result and are dropped. A terminator is appended: the tokenizer's EOS id (``eos=True``), the
    given id (``eos=<int>``) or none (``eos=False``).

    Raises:
        ValueError: an empty title list, a non-string title, a tokenizer without an EOS id when
            ``eos=True``, or a context whose tokens are not a prefix of context + title (names
            the title and the context).
    """
    if len(titles) == 0:
        raise ValueError("the catalog is empty: give at least one title")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if eos is True:
        eos_id = getattr(tokenizer, "eos_token_id", None)
        if eos_id is None:
            raise ValueError("the tokenizer has no eos_token_id; pass eos=<token id> or eos=False")
    elif eos is False:
        eos_id = None
    else:
        eos_id = int(eos)
    ctx_ids = _encode(tokenizer, [context])[0] if context else []
    paths: list[list[int]] = []
    show = progress if progress is not None else len(titles) > 50_000
    for start in tqdm(
        range(0, len(titles), batch_size), desc="tokenizing titles", disable=not show, unit="batch"
    ):
        batch = titles[start : start + batch_size]
        for offset, title in enumerate(batch):
            if not isinstance(title, str):
                raise ValueError(f"title {start + offset} is {type(title).__name__}, not a string")
        encoded = _encode(tokenizer, [context + prefix + t + suffix for t in batch])
        for offset, ids in enumerate(encoded):
            if ids[: len(ctx_ids)] != ctx_ids:
                raise ValueError(
                    f"title {start + offset} ({batch[offset]!r}): the tokens of the context "
                    f"{context!r} are not a prefix of the tokens of context + title; the "
                    "tokenizer merges across the boundary. End the context with a separator "
                    "(a space, newline or quote) that the tokenizer keeps as its own token"
                )
            path = ids[len(ctx_ids) :]
            if not path:
                raise ValueError(f"title {start + offset} ({batch[offset]!r}) encodes to no tokens")
            if eos_id is not None:
                path.append(eos_id)
            paths.append(path)
    return paths


def build_from_titles(
    titles: Sequence[str],
    tokenizer: Any,
    *,
    weights: Weights | None = None,
    context: str = "",
    prefix: str = "",
    suffix: str = "\n",
    eos: bool | int = True,
    entropy: str = "global",
    batch_size: int = 4096,
    progress: bool | None = None,
) -> TrieData:
    """Build the arrays of a trie over item titles; see :meth:`igdbeam.ItemTrie.from_titles`.

    The paths come from :func:`tokenize_titles_in_context`; token ids are checked against the
    tokenizer's vocabulary when it has a length.

    Raises:
        ValueError: as :func:`tokenize_titles_in_context` and
            :func:`igdbeam.trie.build.build_from_paths`.
    """
    paths = tokenize_titles_in_context(
        titles,
        tokenizer,
        context=context,
        prefix=prefix,
        suffix=suffix,
        eos=eos,
        batch_size=batch_size,
        progress=progress,
    )
    vocab_size = len(tokenizer) if hasattr(tokenizer, "__len__") else None
    return build_from_paths(paths, weights, entropy=entropy, vocab_size=vocab_size)
