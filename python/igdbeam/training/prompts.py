"""Prompt templates and training examples whose label tokens are exactly the trie's item paths.

Two templates, after the public reference code:

* ``igd`` (BIGRec / IGD style, Alpaca format): the response is the bare title and a newline,
  ``f"{title}\\n"`` + EOS, as the IGD reference trie encodes it (spec section 1);
* ``d3`` (D3 style): the response is the quoted title, ``f'"{title}"\\n'`` + EOS.

Both prompts end in ``"### Response:\\n"``. :func:`build_example` tokenizes the target with
:func:`igdbeam.tokenize_titles_in_context` using the *whole prompt* as context, and
:func:`trie_for_catalog` builds the :class:`~igdbeam.ItemTrie` with the same rule and the
template's fixed ``trie_context`` (the prompt's last line); because the prompt ends in a newline,
which GPT-2 / Llama style pre-tokenizers keep as its own token, both give the same tokens. A test
proves it on the real SmolLM2 tokenizer; :func:`build_example` also checks it per example when
it is given the trie.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from igdbeam.trie.item_trie import ItemTrie
from igdbeam.trie.titles import tokenize_titles_in_context

IGNORE_INDEX = -100


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt format: how a history becomes a prompt and how a title becomes the response.

    Attributes:
        name: short name (``igd`` or ``d3``).
        header: text before the history.
        item_format: how one history title is written (``{title}`` is replaced).
        separator: between history items.
        footer: after the history; must end the prompt with ``trie_context``.
        response_prefix / response_suffix: around the target title in the response.
        trie_context: the fixed end of every prompt, used as the trie's tokenization context.
    """

    name: str
    header: str
    item_format: str
    separator: str
    footer: str
    response_prefix: str
    response_suffix: str
    trie_context: str

    def prompt(self, history_titles: Sequence[str]) -> str:
        """Return the prompt text for a history (oldest first)."""
        if len(history_titles) == 0:
            raise ValueError("the history is empty: a prompt needs at least one past item")
        items = self.separator.join(self.item_format.format(title=t) for t in history_titles)
        return self.header + items + self.footer

    def history_free_prompt(self) -> str:
        """The prompt with the user's history left out (the CFT baseline's counterfactual)."""
        return self.header + self.footer

    def response(self, title: str) -> str:
        """Return the response text for a title (without EOS)."""
        return self.response_prefix + title + self.response_suffix


_ALPACA = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
)

TEMPLATES: dict[str, PromptTemplate] = {
    "igd": PromptTemplate(
        name="igd",
        header=_ALPACA
        + "### Instruction:\nGiven a list of movies the user has watched before, please "
        "recommend a new movie that the user likes to the user.\n\n### Input:\n"
        "The user has watched the following movies before: ",
        item_format='"{title}"',
        separator=", ",
        footer="\n\n### Response:\n",
        response_prefix="",
        response_suffix="\n",
        trie_context="### Response:\n",
    ),
    "d3": PromptTemplate(
        name="d3",
        header=_ALPACA
        + "### Instruction:\nGiven a list of movies the user has watched before, please "
        "recommend a new movie that the user likes.\n\n### Input:\n"
        "The user has watched the following movies before:\n",
        item_format='"{title}"',
        separator=", ",
        footer="\n\n### Response:\n",
        response_prefix='"',
        response_suffix='"\n',
        trie_context="### Response:\n",
    ),
}


def get_template(template: str | PromptTemplate) -> PromptTemplate:
    """Return a template by name (``igd`` / ``d3``) or pass one through."""
    if isinstance(template, PromptTemplate):
        return template
    try:
        return TEMPLATES[template]
    except KeyError:
        raise ValueError(f"unknown template {template!r}; known: {', '.join(TEMPLATES)}") from None


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def title_path(
    tokenizer: Any, title: str, template: str | PromptTemplate, context: str
) -> list[int]:
    """Return the response tokens of ``title`` (EOS included) encoded after ``context``."""
    t = get_template(template)
    return tokenize_titles_in_context(
        [title],
        tokenizer,
        context=context,
        prefix=t.response_prefix,
        suffix=t.response_suffix,
        eos=True,
    )[0]


def fit_prompt(
    tokenizer: Any,
    history_titles: Sequence[str],
    template: str | PromptTemplate,
    max_prompt_tokens: int | None = None,
) -> tuple[str, list[int]]:
    """Return the prompt of ``history_titles`` and its token ids.

    The oldest history items are dropped until the prompt fits ``max_prompt_tokens`` (None: no
    limit); at least one item is always kept.
    """
    t = get_template(template)
    history = list(history_titles)
    prompt = t.prompt(history)
    prompt_ids = _encode(tokenizer, prompt)
    while (
        max_prompt_tokens is not None and len(prompt_ids) > max_prompt_tokens and len(history) > 1
    ):
        history = history[1:]
        prompt = t.prompt(history)
        prompt_ids = _encode(tokenizer, prompt)
    return prompt, prompt_ids


def build_example(
    tokenizer: Any,
    history_titles: Sequence[str],
    target_title: str,
    template: str | PromptTemplate = "igd",
    *,
    max_prompt_tokens: int | None = None,
    trie: ItemTrie | None = None,
    target_item: int | None = None,
) -> tuple[list[int], list[int]]:
    """Return ``(input_ids, labels)`` of one training example.

    ``input_ids`` = prompt tokens + response tokens (EOS included); ``labels`` is -100 on the
    prompt and equals the response tokens, which are the title's trie path: the title is encoded
    in context with the same rule the trie uses (:func:`igdbeam.tokenize_titles_in_context`).

    Args:
        tokenizer: a Hugging Face tokenizer.
        history_titles: the user's history, oldest first (must not be empty).
        target_title: the next item's title.
        template: ``"igd"``, ``"d3"`` or a :class:`PromptTemplate`.
        max_prompt_tokens: drop the oldest history items until the prompt fits (at least one is
            always kept).
        trie: when given, check that the label path is the trie path of ``target_item`` (or
            any leaf when ``target_item`` is None) and raise otherwise.
        target_item: the target's catalog position for the ``trie`` check.

    Raises:
        ValueError: empty history, or labels that are not the trie path.
    """
    t = get_template(template)
    prompt, prompt_ids = fit_prompt(tokenizer, history_titles, t, max_prompt_tokens)
    path = title_path(tokenizer, target_title, t, prompt)
    if trie is not None:
        if target_item is not None:
            expected = trie.item_path(int(target_item))
            if path != expected:
                raise ValueError(
                    f"label tokens {path} of {target_title!r} differ from its trie path {expected}"
                )
        else:
            node = int(trie.walk([path])[0])
            if node < 0 or not trie.is_leaf(node):
                raise ValueError(f"label tokens {path} of {target_title!r} are not a trie path")
    return prompt_ids + path, [IGNORE_INDEX] * len(prompt_ids) + path


def trie_for_catalog(
    titles: Sequence[str],
    tokenizer: Any,
    template: str | PromptTemplate = "igd",
    *,
    weights: Sequence[float] | np.ndarray | None = None,
    entropy: str = "global",
    progress: bool | None = None,
) -> ItemTrie:
    """Build the catalog's :class:`~igdbeam.ItemTrie` with the template's tokenization context.

    ``titles[k]`` becomes trie item ``k``; ``weights`` are the item weights (e.g.
    :func:`igdbeam.popularity_weights` of the training targets), uniform when None.
    """
    t = get_template(template)
    return ItemTrie.from_titles(
        list(titles),
        tokenizer,
        weights=weights,
        context=t.trie_context,
        prefix=t.response_prefix,
        suffix=t.response_suffix,
        eos=True,
        entropy=entropy,
        progress=progress,
    )
