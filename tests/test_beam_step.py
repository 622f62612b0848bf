"""The fused beam_step op against a plain-torch reference (float64)."""

from __future__ import annotations

import math

import pytest
import torch

import igdbeam
from factories.catalogs import synthetic_catalog
from factories.ids import EOS
from igdbeam.ops.decode_steps import beam_step
from oracles.decode import reference_beam_step
from oracles.trie import ReferenceTrie


def _node_ids(trie, ref) -> dict[tuple[int, ...], int]:
    """prefix -> native node id, for the reference to name nodes."""
    return {prefix: int(trie.walk([list(prefix)])[0]) for prefix in ref.prefixes()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("alpha", "temperature", "renormalize"),
    [(0.0, 1.0, False), (0.5, 1.0, False), (0.3, 0.8, True), (1.0, 1.5, False)],
)
def test_beam_step_matches_reference(dtype, alpha, temperature, renormalize) -> None:
    vocab, batch, beams = 80, 3, 4
    paths = synthetic_catalog(30, vocab, seed=31).paths()
    weights = [1 + i % 4 for i in range(len(paths))]
    trie = igdbeam.ItemTrie.from_token_ids(paths, weights)
    ref = ReferenceTrie(paths, weights)
    g = torch.Generator().manual_seed(32)
    logits = (torch.randn(batch * beams, vocab, generator=g) * 3).to(dtype)
    scores = -torch.rand(batch * beams, generator=g) * 4
    # Root, inner nodes, a leaf and an inactive beam; C both above and below the candidates.
    leaf = int(trie.walk([paths[0]])[0])
    inner = [int(trie.walk([p[:1]])[0]) for p in paths[:3]]
    nodes = torch.tensor([0, inner[0], leaf, -1, inner[1], inner[2], 0, leaf, -1, -1, leaf, 0])
    nodes = nodes.to(torch.int32)
    for C in (3, 8, 200):
        out = beam_step(
            trie,
            logits,
            scores,
            nodes,
            beams=beams,
            num_candidates=C,
            alpha=alpha,
            temperature=temperature,
            renormalize=renormalize,
        )
        expected = reference_beam_step(
            ref, _node_ids(trie, ref), logits.float(), scores, nodes, beams, C, alpha,
            temperature=temperature, renormalize=renormalize,
        )  # fmt: skip
        for b in range(batch):
            exp_scores = torch.tensor([c[0] for c in expected[b]], dtype=torch.float32)
            exp_logp = torch.tensor([c[1] for c in expected[b]], dtype=torch.float32)
            torch.testing.assert_close(out.score[b], exp_scores, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out.logp[b], exp_logp, rtol=1e-5, atol=1e-5)
            assert out.beam[b].tolist() == [c[2] for c in expected[b]]
            assert out.token[b].tolist() == [c[3] for c in expected[b]]
            assert out.node[b].tolist() == [c[4] for c in expected[b]]


def test_beam_step_ties_break_by_beam_then_token() -> None:
    paths = [[5, EOS], [6, EOS], [7, EOS]]
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    logits = torch.zeros(3, 10)  # every token equally likely: all candidate scores tie
    out = beam_step(
        trie,
        logits,
        torch.zeros(3),
        torch.zeros(3, dtype=torch.int32),
        beams=3,
        num_candidates=7,
    )
    assert out.beam[0].tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert out.token[0].tolist() == [5, 6, 7, 5, 6, 7, 5]
    torch.testing.assert_close(out.score[0], torch.full((7,), -math.log(10)))


def test_candidate_bound_hint_and_fanout_bounds() -> None:
    """``max_candidates_per_row`` only sizes the CUDA select; on the CPU any value is ignored."""
    paths = synthetic_catalog(30, 64, seed=40).paths()
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    offsets = trie.child_offsets.tolist()
    fanouts = [offsets[n + 1] - offsets[n] for n in range(trie.num_nodes)]
    assert trie.fanout_bounds() == (fanouts[0], max(fanouts[1:]))
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(8, 64, generator=g)
    nodes = torch.tensor([0, 0, 1, 2, 3, -1, 0, 4], dtype=torch.int32)
    args = (trie, logits, torch.zeros(8), nodes)
    base = beam_step(*args, beams=4, num_candidates=6, alpha=0.2)
    hinted = beam_step(*args, beams=4, num_candidates=6, alpha=0.2, max_candidates_per_row=1)
    for field in ("score", "logp", "beam", "token", "node"):
        assert torch.equal(getattr(base, field), getattr(hinted, field))


def test_beam_step_bad_input() -> None:
    trie = igdbeam.ItemTrie.from_token_ids([[5, EOS]], vocab_size=10)
    nodes = torch.zeros(2, dtype=torch.int32)
    with pytest.raises(ValueError, match="alpha"):
        beam_step(
            trie, torch.zeros(2, 10), torch.zeros(2), nodes, beams=2, num_candidates=2, alpha=2.0
        )
    with pytest.raises(ValueError, match="vocabulary"):
        beam_step(trie, torch.zeros(2, 8), torch.zeros(2), nodes, beams=2, num_candidates=2)
    with pytest.raises(ValueError, match="multiple"):
        beam_step(
            trie,
            torch.zeros(3, 10),
            torch.zeros(3),
            torch.zeros(3, dtype=torch.int32),
            beams=2,
            num_candidates=2,
        )
    with pytest.raises(ValueError, match="dtype"):
        beam_step(trie, torch.zeros(2, 10), torch.zeros(2), nodes.long(), beams=2, num_candidates=2)
