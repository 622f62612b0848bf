"""Shared checks of igdbeam.generate: the processor path in model.generate and hypothesis lists."""

from __future__ import annotations

import pytest

import igdbeam
from factories.ids import EOS, PAD
from igdbeam.decoding.processor import IGDLogitsProcessor
from oracles.decode import hf_hypotheses


def processor_path(model, ids, mask, trie, ref, beams, alpha, lp, early_stopping=False):
    """Hypotheses of transformers' own beam search with :class:`IGDLogitsProcessor`."""
    out = model.generate(
        ids,
        attention_mask=mask,
        num_beams=beams,
        num_return_sequences=beams,
        length_penalty=lp,
        early_stopping=early_stopping,
        max_new_tokens=trie.max_depth,
        do_sample=False,
        return_dict_in_generate=True,
        output_scores=True,
        pad_token_id=PAD,
        eos_token_id=EOS,
        logits_processor=[IGDLogitsProcessor(trie, alpha=alpha)],
    )
    return hf_hypotheses(out.sequences, out.sequences_scores, ids.shape[1], ref, ids.shape[0])


def ours_hypotheses(result: igdbeam.RecommendationOutput, trie: igdbeam.ItemTrie):
    """``[(path, score), ...]`` per prompt of a generate result, checking its sequences."""
    rows = []
    for b in range(result.item_ids.shape[0]):
        row = []
        for k in range(result.item_ids.shape[1]):
            item = int(result.item_ids[b, k])
            if item < 0:
                assert result.scores[b, k] == float("-inf")
                assert int(result.lengths[b, k]) == 0
                continue
            path = tuple(trie.item_path(item))
            n = int(result.lengths[b, k])
            assert tuple(result.sequences[b, k, :n].tolist()) == path
            assert n == len(path)
            row.append((path, float(result.scores[b, k])))
        rows.append(row)
    return rows


def assert_same_hypotheses(ours, theirs, atol=1e-5):
    """Same paths in the same order, scores within ``atol``."""
    assert [[p for p, _ in r] for r in ours] == [[p for p, _ in r] for r in theirs]
    for ro, rt in zip(ours, theirs, strict=True):
        for (_, so), (_, st) in zip(ro, rt, strict=True):
            assert so == pytest.approx(st, abs=atol)
