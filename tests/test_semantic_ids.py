"""Semantic-ID catalogs (TIGER style): items are code tuples written as added tokens.

3 codebooks of 8 codes; code ``j`` of codebook ``i`` is the added token ``<{a,b,c}_j>``. The
code trie's information gains and zero-IG flags match the pure-Python reference, a tiny random
Llama trained with ``IGDTrainer`` decodes with ``igdbeam.generate`` (alpha > 0) only catalog items,
and each decoded token path is the code tuple of the item it names.
"""

from __future__ import annotations

import importlib.util
import random
import re
import sys
from pathlib import Path

import pytest
import torch

from factories.models import tiny_llama
from oracles.trie import ReferenceTrie

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import igdbeam  # noqa: E402
from igdbeam import CompletionCollator, IGDTrainer, ItemTrie  # noqa: E402

CODEBOOKS, CODES = 3, 8
NUM_ITEMS = 24
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "semantic_ids.py"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def sid_tokens() -> list[str]:
    return [f"<{'abc'[c]}_{j}>" for c in range(CODEBOOKS) for j in range(CODES)]


def make_codes() -> list[tuple[int, int, int]]:
    """24 distinct code tuples: 3 first-level clusters (shared prefixes), one lone item."""
    rng = random.Random(7)
    codes: set[tuple[int, int, int]] = {(7, 0, 0)}  # alone under <a_7>: two zero-IG codes
    while len(codes) < NUM_ITEMS:
        codes.add((rng.choice([1, 4, 5]), rng.randrange(4), rng.randrange(CODES)))
    return sorted(codes)


def word_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer for the prompt words, plus the added code tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<eos>", "<unk>", "history", ":", "next"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    assert fast.add_tokens(sid_tokens()) == CODEBOOKS * CODES
    return fast


def sid_text(codes: tuple[int, ...]) -> str:
    return "".join(f"<{'abc'[c]}_{j}>" for c, j in enumerate(codes))


def parse_codes(tokens: list[str]) -> tuple[int, ...]:
    """Code tuple of decoded tokens, independent of the example's parser."""
    out = []
    for c, tok in enumerate(tokens):
        m = re.fullmatch(r"<([abc])_(\d)>", tok)
        assert m is not None and m.group(1) == "abc"[c], tokens
        out.append(int(m.group(2)))
    return tuple(out)


@pytest.fixture(scope="module")
def catalog() -> tuple[transformers.PreTrainedTokenizerFast, list, list[list[int]], list[float]]:
    tok = word_tokenizer()
    codes = make_codes()
    paths = [
        tok(sid_text(c), add_special_tokens=False).input_ids + [tok.eos_token_id] for c in codes
    ]
    weights = [1.0 + (i * 5) % 4 for i in range(NUM_ITEMS)]
    return tok, codes, paths, weights


def test_code_tokens_and_trie_match_the_reference(catalog) -> None:
    tok, codes, paths, weights = catalog
    ids = tok.convert_tokens_to_ids(sid_tokens())
    base = len(tok) - CODEBOOKS * CODES
    assert ids == list(range(base, len(tok)))  # one new id per code
    for c, path in zip(codes, paths, strict=True):
        # one token per code: codebook i's code j is id base + i * CODES + j
        assert path == [base + i * CODES + j for i, j in enumerate(c)] + [tok.eos_token_id]

    trie = ItemTrie.from_token_ids(paths, weights=weights, vocab_size=len(tok))
    ref = ReferenceTrie(paths, weights)
    assert trie.num_nodes == len(ref.prefixes()) and trie.num_items == NUM_ITEMS
    assert trie.max_depth == CODEBOOKS + 1
    zero_edges = 0
    for prefix in ref.prefixes():
        if not prefix:
            continue
        node = int(trie.walk([list(prefix)])[0])
        parent, token = prefix[:-1], prefix[-1]
        assert bool(trie.zero_ig[node]) == ref.is_zero_ig(parent, token), prefix
        assert float(trie.info_gain[node]) == pytest.approx(
            ref.info_gain(parent, token), rel=1e-5, abs=1e-6
        )
        assert float(trie.info_gain_norm[node]) == pytest.approx(
            ref.normalized_info_gain(parent, token), abs=1e-5
        )
        zero_edges += ref.is_zero_ig(parent, token)
    # The structure of a code trie: EOS after the last code is always zero-IG; the lone item
    # (7, 0, 0) has zero-IG second and third codes; every first code is informative.
    lone = paths[codes.index((7, 0, 0))]
    assert [ref.is_zero_ig(lone[:d], lone[d]) for d in range(4)] == [False, True, True, True]
    assert trie.path_information_gain(lone)[1:].tolist() == [0.0, 0.0, 0.0]
    for path in paths:
        assert ref.is_zero_ig(path[:3], path[3]) and not ref.is_zero_ig((), path[0])
    s = trie.stats()
    zero_tokens = sum(
        w * sum(ref.is_zero_ig(p[:d], p[d]) for d in range(len(p)))
        for w, p in zip(weights, paths, strict=True)
    )
    all_tokens = sum(w * len(p) for w, p in zip(weights, paths, strict=True))
    assert s["zero_ig_token_share"] == pytest.approx(zero_tokens / all_tokens)
    assert s["zero_ig_edge_share"] == pytest.approx(zero_edges / (trie.num_nodes - 1))


def test_train_and_decode_semantic_ids(tmp_path: Path, catalog) -> None:
    tok, codes, paths, weights = catalog
    model = tiny_llama(
        len(tok) - CODEBOOKS * CODES,
        sharpen=None,
        hidden=48,
        intermediate=96,
        max_positions=64,
        eos=1,
        bos=1,
    )
    model.resize_token_embeddings(len(tok), mean_resizing=False)  # room for the code tokens
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    trie = ItemTrie.from_token_ids(paths, weights=weights, vocab_size=len(tok))

    rng = random.Random(0)
    successor = list(range(NUM_ITEMS))
    rng.shuffle(successor)
    rows = []
    for _ in range(48):
        history = [rng.randrange(NUM_ITEMS) for _ in range(2)]
        text = "history : " + " ".join(sid_text(codes[i]) for i in history) + " next :"
        rows.append(
            {
                "prompt_ids": tok(text, add_special_tokens=False).input_ids,
                "completion_ids": paths[successor[history[-1]]],
            }
        )
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=12,
        learning_rate=5e-3,
        report_to=[],
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=1,
        use_cpu=True,
        remove_unused_columns=False,
        disable_tqdm=True,
        seed=0,
    )
    trainer = IGDTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=CompletionCollator(tok.pad_token_id),
        trie=trie,
        beta=0.1,
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert all(h.get("igd_left_trie_rows", 0) == 0 for h in trainer.state.log_history)

    prompts = [r["prompt_ids"] for r in rows[:6]]
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.arange(width)[None] >= torch.tensor([width - len(p) for p in prompts])[:, None]
    model.eval()
    rec = igdbeam.generate(
        model, ids, mask.long(), trie=trie, num_beams=5, alpha=0.2, length_penalty=0.0
    )
    assert rec.item_ids.shape == (6, 5)
    for b in range(6):
        items = rec.item_ids[b].tolist()
        assert all(0 <= i < NUM_ITEMS for i in items) and len(set(items)) == 5
        for k, item in enumerate(items):
            n = int(rec.lengths[b, k])
            seq = rec.sequences[b, k, :n].tolist()
            assert n == CODEBOOKS + 1 and seq[-1] == tok.eos_token_id
            assert seq == paths[item]
            assert parse_codes(tok.convert_ids_to_tokens(seq[:-1])) == codes[item]
        assert rec.scores[b].tolist() == sorted(rec.scores[b].tolist(), reverse=True)


def test_example_script_runs(tmp_path: Path) -> None:
    """examples/semantic_ids.py end to end with a tiny setting (the example's own helpers)."""
    spec = importlib.util.spec_from_file_location("semantic_ids_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        tok = module.tiny_tokenizer()
        module.add_semantic_id_tokens(tok, None, CODEBOOKS, CODES)
        codes = module.random_codes(NUM_ITEMS, CODEBOOKS, CODES, seed=1)
        assert len(set(codes)) == NUM_ITEMS
        paths = module.item_token_paths(codes, tok)
        for c, path in zip(codes, paths, strict=True):
            assert module.codes_of_tokens(path, tok) == c
            assert parse_codes(tok.convert_ids_to_tokens(path[:-1])) == c
        argv = ["--items", "16", "--rows", "24", "--steps", "3", "--beams", "3"]
        metrics = module.main([*argv, "--out", str(tmp_path)])
        assert 0.0 <= metrics["HR@3"] <= 1.0
    finally:
        sys.modules.pop(spec.name, None)
