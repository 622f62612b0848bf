"""Item titles to trie paths: tokenized in context, exactly as the model emits them after the
prompt (spec 1), then built into a trie's arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from igdbeam.errors import InvalidIdError, as_index
from igdbeam.trie.build import Weights, build_from_paths
from igdbeam.trie.layout import TrieData


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    out = tokenizer(texts, add_special_tokens=False)
    return [list(ids) for ids in out["input_ids"]]


# Separators tried at the end of a context, most common first.
_SEPARATORS = ("\n", '"', " ", "\t", ": ", "\n\n")


def _keeps_boundary(tokenizer: Any, context: str, texts: Sequence[str]) -> bool:
    """True when ``context``'s tokens are a prefix of the tokens of ``context + text``, for
    every text."""
    ctx_ids = _encode(tokenizer, [context])[0] if context else []
    full = _encode(tokenizer, [context + t for t in texts])
    return all(ids[: len(ctx_ids)] == ctx_ids for ids in full)


def boundary_hint(tokenizer: Any, context: str, texts: Sequence[str]) -> str:
    """What to change at the end of ``context`` so that this tokenizer keeps it apart from
    every one of ``texts`` (``prefix + title + suffix``), found by trying it.

    Separators are tried after the context as given and, when it ends in whitespace, after the
    context without it (a trailing space usually merges with the title's first word: with
    SmolLM2's tokenizer ``"Response: "`` + ``"Heat"`` is ``"Response:"`` + ``" Heat"``, while
    ``"Response:\n"`` keeps the newline apart). The first candidate that keeps the boundary
    for every text is named.
    """
    stems = [context]
    if context != context.rstrip():
        stems.insert(0, context.rstrip())
    for stem in stems:
        for sep in _SEPARATORS:
            candidate = stem + sep
            if candidate == context or not _keeps_boundary(tokenizer, candidate, texts):
                continue
            how = f"end the context with {sep!r}"
            if stem != context:
                how += f" instead of its trailing whitespace {context[len(stem) :]!r}"
            return (
                f"With this tokenizer, {how} (context {candidate!r}): tried, it keeps every "
                "title of this batch apart"
            )
    return (
        "None of the separators "
        + ", ".join(map(repr, _SEPARATORS))
        + " at the end of the context keeps every title of this batch apart with this "
        "tokenizer; end the context with a token that never merges with what follows (e.g. a "
        "special token of the chat template)"
    )


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
        TypeError: ``titles`` is one string (a catalog is a sequence of titles; a string would
            make one item per character), or ``context`` / ``prefix`` / ``suffix`` is not one.
        InvalidIdError: ``batch_size`` or an ``eos`` id that is not an integer (a float, a
            bool, NaN; never truncated), or a negative ``eos``.
        ValueError: an empty title list, a non-string, empty or whitespace-only title, a
            tokenizer without an EOS id when ``eos=True``, or a context whose tokens are not a
            prefix of context + title (names the title and the context, and says which
            separator at the end of the context this tokenizer keeps apart).
    """
    if isinstance(titles, str | bytes):
        raise TypeError(
            f"titles must be a sequence of title strings, got one {type(titles).__name__} "
            f"({titles[:40]!r}); wrap a single title in a list: [{titles[:40]!r}]"
        )
    if len(titles) == 0:
        raise ValueError("the catalog is empty: give at least one title")
    batch_size = as_index(batch_size, "batch_size")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None, got {progress!r}")
    for name, text in (("context", context), ("prefix", prefix), ("suffix", suffix)):
        if not isinstance(text, str):
            raise TypeError(f"{name} must be a string, got {type(text).__name__}")
    if eos is True:
        eos_id = getattr(tokenizer, "eos_token_id", None)
        if eos_id is None:
            raise ValueError("the tokenizer has no eos_token_id; pass eos=<token id> or eos=False")
        eos_id = as_index(eos_id, "the tokenizer's eos_token_id")
    elif eos is False:
        eos_id = None
    else:
        eos_id = as_index(eos, "eos")  # a float (2.5) or NaN is refused, never truncated
        if eos_id < 0:
            raise InvalidIdError(f"eos must be a token id >= 0, got {eos_id}")
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
            if not title.strip():
                raise ValueError(
                    f"title {start + offset} is {title!r}: an empty or whitespace-only title "
                    "cannot name an item (drop the item or give it a title)"
                )
        encoded = _encode(tokenizer, [context + prefix + t + suffix for t in batch])
        for offset, ids in enumerate(encoded):
            if ids[: len(ctx_ids)] != ctx_ids:
                raise ValueError(
                    f"title {start + offset} ({batch[offset]!r}): the tokens of the context "
                    f"{context!r} are not a prefix of the tokens of context + title; the "
                    "tokenizer merges across the boundary. "
                    + boundary_hint(tokenizer, context, [prefix + t + suffix for t in batch])
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
