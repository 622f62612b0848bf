"""igdbeam.vllm's engine-free search (TrieSearch + CompactTrie) against igdbeam.generate.

The "engine" here is a plain transformers forward of each query's whole token sequence (no KV
cache), so the test runs without vLLM and checks the search machine itself: the compact rows,
the native beam step on them, finished slots, stopping, compaction and the result type.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import igdbeam
from factories.catalogs import synthetic_catalog
from factories.ids import EOS, PAD
from factories.models import left_pad, tiny_llama
from igdbeam.decoding.inputs import Decoding
from igdbeam.vllm import CompactTrie, TrieSearch

PROMPTS = [[5, 6, 7], [30, 31, 32, 33, 34], [40], [41, 42], [5, 6, 7]]  # the last: a repeat
QUERIES: list[int] = []


def _answer(model, queries) -> list[list[np.ndarray]]:
    """Per query, the full-vocabulary log-probs of each chain node's children (float64 copy):
    one forward of the query's whole sequence."""
    out = []
    with torch.no_grad():
        for q in queries:
            logits = model(torch.tensor([q.sequence])).logits[0].float()
            logp = torch.log_softmax(logits, -1).double()
            base = len(q.token_ids) - 1
            k = len(q.chain_tokens)
            arrays = [logp[base + i, [q.chain_tokens[i]]].numpy() for i in range(k)]
            out.append([*arrays, logp[base + k, q.children].numpy()])
    return out


def _run(model, trie, prompts, **kwargs) -> igdbeam.RecommendationOutput:
    decoding = Decoding(
        **{
            k: kwargs.pop(k)
            for k in ("alpha", "length_penalty", "early_stopping", "renormalize")
            if k in kwargs
        }
    )
    search = TrieSearch(CompactTrie(trie), prompts, decoding=decoding, pad_token_id=PAD, **kwargs)
    steps = asked = 0
    while not search.done:
        queries = search.queries()
        asked += len(queries)
        search.advance(_answer(model, queries))
        steps += 1
    assert steps == search.steps_run <= trie.max_depth
    QUERIES.append(asked)
    return search.output()


def _catalog(n: int = 40, seed: int = 3) -> igdbeam.ItemTrie:
    paths = synthetic_catalog(n, 96, seed=seed).paths()
    return igdbeam.ItemTrie.from_token_ids(paths, [1 + (i * 7) % 5 for i in range(len(paths))])


def _assert_same(ours: igdbeam.RecommendationOutput, ref: igdbeam.RecommendationOutput) -> None:
    assert ours.item_ids.tolist() == ref.item_ids.tolist()
    torch.testing.assert_close(ours.scores, ref.scores, rtol=0, atol=2e-5)
    assert ours.sequences.tolist() == ref.sequences.tolist()
    assert ours.lengths.tolist() == ref.lengths.tolist()
    assert ours.nodes.tolist() == ref.nodes.tolist()


@pytest.mark.slow  # ~3-10 s each on 2 busy cores
@pytest.mark.parametrize(
    ("beams", "alpha", "lp"), [(1, 0.0, 0.0), (4, 0.3, 0.0), (4, 0.0, 1.0), (12, 0.3, 1.0)]
)
def test_search_equals_generate(beams: int, alpha: float, lp: float) -> None:
    model = tiny_llama(seed=4)
    trie = _catalog()
    ids, mask = left_pad(PROMPTS)
    ref = igdbeam.generate(
        model,
        ids,
        mask,
        trie=trie,
        num_beams=beams,
        alpha=alpha,
        length_penalty=lp,
        kv_cache="dynamic",
        pad_token_id=PAD,
    )
    ours = _run(model, trie, PROMPTS, num_beams=beams, alpha=alpha, length_penalty=lp)
    _assert_same(ours, ref)


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        {"early_stopping": "never", "length_penalty": 1.0},
        {"early_stopping": True},
        {"renormalize": True, "alpha": 0.5},
        {"num_return_sequences": 2},
        {"max_new_tokens": 2},
    ],
)
def test_search_options_equal_generate(options: dict) -> None:
    model = tiny_llama(seed=5)
    trie = _catalog(seed=9)
    ids, mask = left_pad(PROMPTS)
    ref = igdbeam.generate(
        model, ids, mask, trie=trie, num_beams=5, kv_cache="dynamic", pad_token_id=PAD, **options
    )
    ours = _run(model, trie, PROMPTS, num_beams=5, **dict(options))
    _assert_same(ours, ref)


@pytest.mark.slow
def test_search_item_filters_equal_generate() -> None:
    model = tiny_llama(seed=6)
    trie = _catalog(seed=11)
    ids, mask = left_pad(PROMPTS)
    excluded = [[0, 1, 2], [], list(range(0, 40, 2)), list(range(39)), [5, 6]]
    item_mask = igdbeam.exclude_items(trie, excluded)
    scores = torch.log(torch.arange(1, trie.num_items + 1, dtype=torch.float32))
    kw = dict(
        num_beams=6, alpha=0.2, item_mask=item_mask, item_scores=scores, item_score_weight=0.5
    )
    ref = igdbeam.generate(model, ids, mask, trie=trie, kv_cache="dynamic", pad_token_id=PAD, **kw)
    ours = _run(model, trie, PROMPTS, **kw)
    _assert_same(ours, ref)
    assert set(ours.item_ids[3].tolist()) <= {39, -1}  # only item 39 is left for prompt 3


def test_compact_rows_restore_full_vocabulary_log_probs() -> None:
    trie = igdbeam.ItemTrie.from_token_ids([[50, 7, EOS], [50, 9, EOS], [60, EOS]], vocab_size=96)
    compact = CompactTrie(trie)
    assert compact.vocab.tolist() == [EOS, 7, 9, 50, 60] and compact.residual == 5
    assert compact.child_tokens(0) == [50, 60]
    lp = np.log(np.array([0.25, 0.5]))
    rows = compact.logits(np.array([0, -1]), [lp, None])
    expected = [
        [-np.inf, -np.inf, -np.inf, np.log(0.25), np.log(0.5), np.log(0.25)],
        [-np.inf] * 5 + [0.0],
    ]
    torch.testing.assert_close(rows, torch.tensor(expected, dtype=torch.float32))
    torch.testing.assert_close(
        torch.log_softmax(rows[0], -1)[3:5], torch.tensor(lp, dtype=torch.float32)
    )
    assert compact.tokens_of_columns(torch.tensor([3, 0, 5, -1])).tolist() == [50, EOS, -1, -1]
    with pytest.raises(ValueError, match="3 log-probs for the 2 children"):
        compact.logits(np.array([0]), [np.zeros(3)])


def test_search_checks_its_arguments() -> None:
    compact = CompactTrie(_catalog())
    with pytest.raises(ValueError, match="non-empty list"):
        TrieSearch(compact, [])
    with pytest.raises(ValueError, match="prompt 1 holds"):
        TrieSearch(compact, [[1, 2], [3, -1]])
    with pytest.raises(ValueError, match="prompt 0 holds"):
        TrieSearch(compact, [[1.0, 2]])
    with pytest.raises(ValueError, match="num_return_sequences"):
        TrieSearch(compact, [[1]], num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="temperature"):
        TrieSearch(compact, [[1]], decoding=Decoding(temperature=0.5))
    with pytest.raises(ValueError, match="alpha"):
        TrieSearch(compact, [[1]], decoding=Decoding(alpha=2.0))
    search = TrieSearch(compact, [[1, 2]], num_beams=2)
    (query,) = search.queries()
    assert query.nodes[0] == 0 and query.token_ids == [1, 2]
    with pytest.raises(ValueError, match="0 answers for 1 queries"):
        search.advance([])
    with pytest.raises(ValueError, match="0 log-prob arrays for a chain of 1 nodes"):
        search.advance([[]])
    search.queries()
    with pytest.raises(ValueError, match="NaN"):
        search.advance([[np.full(compact.fanout(0), np.nan)]])


def test_chains_are_asked_once() -> None:
    """A single-child chain is one question: far fewer questions than beams x steps."""
    paths = [[10, 11, 12, 13, 14, EOS], [10, 11, 12, 15, EOS], [20, 21, 22, 23, EOS]]
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    compact = CompactTrie(trie)
    assert compact.chain(0) == ([0], [])
    (n10,) = [int(c) for t, c in zip(*trie.children(0), strict=True) if int(t) == 10]
    nodes, tokens = compact.chain(n10)
    assert tokens == [11, 12] and len(nodes) == 3 and compact.child_tokens(nodes[-1]) == [13, 15]
    model = tiny_llama(seed=7)
    QUERIES.clear()
    ours = _run(model, trie, [[5, 6]], num_beams=3)
    ids, mask = left_pad([[5, 6]])
    ref = igdbeam.generate(
        model, ids, mask, trie=trie, num_beams=3, kv_cache="dynamic", pad_token_id=PAD
    )
    _assert_same(ours, ref)
    # root; the chains below 10 and 20; 13 and 15 (each a chain to a leaf's parent)
    assert QUERIES == [5]


def test_engine_entry_points_pass_every_setting_to_the_search() -> None:
    """generate / agenerate hand their arguments to the search by name: each parameter is the
    engine, the prompts, the trie or a setting the search takes (none forgotten or misspelt)."""
    import inspect

    from igdbeam.vllm import engine

    settings = set(engine._DECODING_ARGS) | set(engine._SEARCH_ARGS)
    for fn, first in ((engine.generate, "llm"), (engine.agenerate, "engine")):
        assert set(inspect.signature(fn).parameters) == {first, "prompts", "trie"} | settings
    assert set(engine._DECODING_ARGS) <= set(inspect.signature(Decoding).parameters)
    taken = set(inspect.signature(TrieSearch).parameters)
    assert set(engine._SEARCH_ARGS) <= taken


def test_requests_over_the_limit_go_in_a_second_wave() -> None:
    """Each query's first request goes first; the further chunks of a wide node after it, so
    they find the prompt in vLLM's prefix cache."""
    from igdbeam.vllm.engine import _waves

    where = [(0, 0, 128), (0, 128, 128), (0, 256, 7), (1, 0, 5), (2, 0, 128), (2, 128, 1)]
    assert _waves(where) == [[0, 3, 4], [1, 2, 5]]
    assert _waves([(0, 0, 5), (1, 0, 0)]) == [[0, 1]]
    assert _waves([]) == [[]]
