"""The decode steps (beam step, processor step) with item filters against float64 references,
on the CPU and (where present) CUDA against the CPU."""

from __future__ import annotations

import math

import pytest
import torch

import igdbeam
from cuda_testing import _C, DTYPES, needs_gpu
from cuda_testing import stream as cuda_stream
from filter_testing import (
    filter_catalog,
    filter_ptrs,
    filters_to_cuda,
    lse,
    node_of,
    ref_node_arrays,
)
from igdbeam.ops.decode_steps import beam_step, processor_step
from igdbeam.ops.node_filters import node_filters
from oracles.decode import reference_beam_step
from oracles.trie import ReferenceTrie

NEG_INF = -math.inf


# --------------------------------------------------------------------------- the decode steps
def _step_inputs(trie, paths, batch, beams, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch * beams, vocab, generator=g) * 3
    scores = -torch.rand(batch * beams, generator=g) * 4
    nodes = []
    for r in range(batch * beams):
        p = paths[(r * 7) % len(paths)]
        nodes.append(node_of(trie, p[: (r % 3)]) if r % 5 != 4 else -1)
    return logits, scores, torch.tensor(nodes, dtype=torch.int32)


@pytest.mark.parametrize(
    ("alpha", "renormalize", "weight"), [(0.0, False, 0.0), (0.4, False, 0.7), (0.3, True, 1.5)]
)
def test_beam_step_with_filters_matches_reference(alpha, renormalize, weight) -> None:
    """The filtered beam step equals the float64 reference with masks and CF scores."""
    paths, weights = filter_catalog(40, seed=12)
    trie = igdbeam.ItemTrie.from_token_ids(paths, weights)
    ref = ReferenceTrie(paths, weights)
    vocab, batch, beams, C = 80, 3, 4, 9
    g = torch.Generator().manual_seed(13)
    prompts = 4
    mask = torch.rand(prompts, len(paths), generator=g) < 0.6
    mask[1] = False  # nothing allowed for prompt 1
    item_scores = torch.randn(prompts, len(paths), generator=g) * 2 if weight else None
    f = node_filters(trie, mask, item_scores, item_score_weight=weight)
    frows = [3, 1, 0]  # batch row -> prompt (a compacted search)
    arrays = [
        ref_node_arrays(ref, mask[p], None if item_scores is None else item_scores[p])
        for p in range(prompts)
    ]
    logits, beam_scores, nodes = _step_inputs(trie, paths, batch, beams, vocab, 14)
    got = beam_step(
        trie,
        logits,
        beam_scores,
        nodes,
        beams=beams,
        num_candidates=C,
        alpha=alpha,
        renormalize=renormalize,
        filters=f,
        filter_rows=torch.tensor(frows),
    )
    node_ids = {p: node_of(trie, p) for p in ref.prefixes()}
    want = reference_beam_step(
        ref, node_ids, logits, beam_scores, nodes, beams, C, alpha, renormalize=renormalize,
        node_arrays=arrays, filter_rows=frows, score_weight=weight,
    )  # fmt: skip
    for b in range(batch):
        assert got.beam[b].tolist() == [c[2] for c in want[b]]
        assert got.token[b].tolist() == [c[3] for c in want[b]]
        assert got.node[b].tolist() == [c[4] for c in want[b]]
        torch.testing.assert_close(
            got.score[b].double(),
            torch.tensor([c[0] for c in want[b]], dtype=torch.float64),
            atol=1e-4,
            rtol=1e-5,
        )
    assert (got.node[1] == -1).all()  # prompt 1: nothing allowed, no candidate at all
    # Without a mask nor a CF weight the filtered step is the plain one.
    plain = beam_step(
        trie,
        logits,
        beam_scores,
        nodes,
        beams=beams,
        num_candidates=C,
        alpha=alpha,
        renormalize=renormalize,
    )
    everything = node_filters(trie, torch.ones(len(paths), dtype=torch.bool))
    same = beam_step(
        trie,
        logits,
        beam_scores,
        nodes,
        beams=beams,
        num_candidates=C,
        alpha=alpha,
        renormalize=renormalize,
        filters=everything,
    )
    for a, b in zip(plain, same, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("renormalize", [False, True])
def test_processor_step_with_filters_matches_reference(renormalize: bool) -> None:
    """The filtered processor step equals the float64 reference."""
    paths, weights = filter_catalog(30, seed=15)
    trie = igdbeam.ItemTrie.from_token_ids(paths, weights)
    ref = ReferenceTrie(paths, weights)
    vocab, prompts, beams = 80, 2, 3
    g = torch.Generator().manual_seed(16)
    mask = torch.rand(prompts, len(paths), generator=g) < 0.5
    item_scores = torch.randn(prompts, len(paths), generator=g)
    weight, alpha = 0.8, 0.3
    f = node_filters(trie, mask, item_scores, item_score_weight=weight)
    arrays = [ref_node_arrays(ref, mask[p], item_scores[p]) for p in range(prompts)]
    prompt = [7, 7]
    gen = [list(paths[(r * 5) % len(paths)][: r % 3]) for r in range(prompts * beams)]
    width = max(len(x) for x in gen)
    ids = torch.tensor([prompt + [0] * (width - len(x)) + x for x in gen])
    # Left-align the generated tokens: rows of equal generated length share a prompt length.
    for plen in sorted({len(prompt) + width - len(x) for x in gen}):
        idx = [r for r, x in enumerate(gen) if len(prompt) + width - len(x) == plen]
        logp = torch.log_softmax(torch.randn(len(idx), vocab, generator=g) * 3, dim=-1)
        scores = logp.clone()
        processor_step(
            trie,
            ids[idx],
            scores,
            prompt_length=plen,
            alpha=alpha,
            renormalize=renormalize,
            filters=f,
            filter_rows=torch.tensor([r // beams for r in idx]),
        )
        for j, r in enumerate(idx):
            prefix = tuple(ids[r, plen:].tolist())
            node_arr = arrays[r // beams]
            want = torch.full((vocab,), NEG_INF, dtype=torch.float64)
            kids = [t for t in ref.children.get(prefix, []) if node_arr[prefix + (t,)][0]]
            lp = {t: float(logp[j, t]) for t in kids}
            if renormalize and kids:
                z = lse(list(lp.values()))
                lp = {t: v - z for t, v in lp.items()}
            for t in kids:
                s_child = node_arr[prefix + (t,)][1]
                step = (1.0 - alpha * ref.normalized_info_gain(prefix, t)) * lp[t]
                step += weight * (s_child - node_arr[prefix][1])
                want[t] = NEG_INF if s_child == NEG_INF else step
            torch.testing.assert_close(scores[j].double(), want, atol=1e-4, rtol=1e-5)


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("renormalize", [False, True])
@pytest.mark.parametrize("select_slices", [0, 3])
def test_cuda_filtered_beam_step_matches_cpu(renormalize: bool, select_slices: int) -> None:
    """The filtered CUDA beam step (any select slices) equals the CPU step."""
    paths, weights = filter_catalog(40, seed=19)
    cpu = igdbeam.ItemTrie.from_token_ids(paths, weights)
    gpu = cpu.to("cuda")
    g = torch.Generator().manual_seed(20)
    vocab, batch, beams, C = 80, 3, 4, 7
    mask = torch.rand(4, len(paths), generator=g) < 0.6
    f = node_filters(cpu, mask, torch.randn(4, len(paths), generator=g), item_score_weight=0.9)
    fg = filters_to_cuda(f)
    frows = torch.tensor([3, 0, 2], dtype=torch.int32)
    logits, beam_scores, nodes = _step_inputs(cpu, paths, batch, beams, vocab, 21)
    want = beam_step(
        cpu,
        logits,
        beam_scores,
        nodes,
        beams=beams,
        num_candidates=C,
        alpha=0.3,
        renormalize=renormalize,
        filters=f,
        filter_rows=frows,
    )
    lg, bs, nd, fr = (t.cuda().contiguous() for t in (logits, beam_scores, nodes, frows))
    out = [
        torch.empty(batch, C, dtype=dt).cuda()
        for dt in (torch.float32, torch.float32, torch.int32, torch.int64, torch.int32)
    ]
    status = _C.beam_step(
        gpu.native_view(),
        lg.data_ptr(),
        DTYPES[lg.dtype],
        batch,
        beams,
        vocab,
        lg.stride(0),
        bs.data_ptr(),
        nd.data_ptr(),
        0.3,
        1.0,
        renormalize,
        C,
        *(t.data_ptr() for t in out),
        *filter_ptrs(fg, fr),
        select_slices,
        0,
        1,  # device: CUDA
        cuda_stream(),
    )
    assert status is None
    torch.cuda.synchronize()
    for a, b in zip(want, out, strict=True):
        if a.dtype == torch.float32:
            torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=1e-5)
        else:
            assert torch.equal(b.cpu(), a)


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("renormalize", [False, True])
def test_cuda_filtered_processor_step_matches_cpu(renormalize: bool) -> None:
    """The filtered CUDA processor step equals the CPU step."""
    paths, weights = filter_catalog(30, seed=27)
    cpu = igdbeam.ItemTrie.from_token_ids(paths, weights)
    gpu = cpu.to("cuda")
    g = torch.Generator().manual_seed(28)
    vocab = 80
    mask = torch.rand(2, len(paths), generator=g) < 0.5
    f = node_filters(cpu, mask, torch.randn(2, len(paths), generator=g), item_score_weight=1.3)
    fg = filters_to_cuda(f)
    gen = [list(paths[(r * 5) % len(paths)][:1]) for r in range(4)]
    ids = torch.tensor([[7, 7] + x for x in gen])
    scores = torch.randn(4, vocab, generator=g) * 3
    frows = torch.tensor([0, 0, 1, 1], dtype=torch.int32)
    want = scores.clone()
    processor_step(
        cpu,
        ids,
        want,
        prompt_length=2,
        alpha=0.2,
        temperature=0.9,
        renormalize=renormalize,
        filters=f,
        filter_rows=frows,
    )
    got, ig, fr = scores.cuda().contiguous(), ids.cuda().contiguous(), frows.cuda().contiguous()
    out_nodes = torch.empty(4, dtype=torch.int32).cuda()
    out_status = torch.empty(4, dtype=torch.int32).cuda()
    status = _C.processor_step(
        gpu.native_view(),
        ig.data_ptr(),
        4,
        ig.shape[1],
        ig.stride(0),
        2,
        got.data_ptr(),
        DTYPES[got.dtype],
        vocab,
        got.stride(0),
        0.2,
        0.9,
        renormalize,
        -1,
        out_nodes.data_ptr(),
        out_status.data_ptr(),
        *filter_ptrs(fg, fr),
        1,  # device: CUDA
        cuda_stream(),
    )
    assert status is None
    torch.cuda.synchronize()
    torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-5)
