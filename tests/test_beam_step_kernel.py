"""The fused beam step op (``_C.beam_step``) on every backend (CPU always, CUDA where built and
present) against the float64 reference, CUDA also against the CPU op. The public ``beam_step``
is judged in test_beam_step.py, the CUDA multi-block select in test_beam_step_selection.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from beam_step_testing import BEAM_FIELDS, beam_inputs, compare_beam_step, run_beam_step
from cuda_testing import (
    DTYPES,
    NumpyTrie,
    build,
    check_beam_step,
    cuda_marks,
    native_op,
    ref_beam_step,
    sync,
    weighted_catalog,
    wide_root_paths,
)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=cuda_marks)])
def backend(request: pytest.FixtureRequest) -> str:
    """The device the step runs on."""
    return request.param


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize(
    "opts",
    [
        dict(alpha=0.2),
        dict(alpha=0.0, temperature=0.7),
        dict(alpha=0.5, renormalize=True),
        dict(alpha=0.1, temperature=1.5, renormalize=True),
    ],  # fmt: skip
)
def test_beam_step_random(backend, dtype, opts) -> None:
    """Random beams (some inactive, some at leaves) of an odd-sized vocabulary, several K."""
    rng = np.random.default_rng(21)
    vocab = 3001  # odd: unaligned rows
    paths, weights = weighted_catalog(rng, 400, vocab, alphabet=50)
    trie = build(paths, weights, vocab=vocab)
    t = NumpyTrie(trie)
    batch, beams = 6, 5
    logits, bs, nodes = beam_inputs(rng, t, batch, beams, vocab, dtype)
    for K in (2 * beams, 3, 64):  # 64 > most rows' candidates: padding
        compare_beam_step(backend, trie, logits, bs, nodes, beams=beams, K=K, **opts)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_beam_step_wide_root_chunked_topk(backend, dtype) -> None:
    """Beams at a root with 60k children: a chunked top-k over 240k candidates per row."""
    rng = np.random.default_rng(22)
    vocab = 151_936
    paths = wide_root_paths(rng, 60_000, vocab)
    trie = build(paths, vocab=vocab)
    t = NumpyTrie(trie)
    batch, beams = 3, 4
    logits, bs, nodes = beam_inputs(rng, t, batch, beams, vocab, dtype, inactive=0.0)
    nodes[beams:] = 0  # every beam of rows 1..2 at the root: 240k candidates per row
    nodes[beams + 1] = 5  # one beam elsewhere
    for K in (8, 128):
        compare_beam_step(backend, trie, logits, bs, nodes, beams=beams, K=K, alpha=0.3)
    compare_beam_step(
        backend, trie, logits, bs, nodes, beams=beams, K=20, alpha=0.3, renormalize=True
    )


def test_beam_step_exact_ties_order(backend) -> None:
    """Equal scores are ordered by (beam, token); padding follows with -inf and -1."""
    paths = [[10, 11, 12, 2], [10, 11, 13, 2], [10, 14, 2], [20, 21, 2]]
    trie = build(paths, [4, 2, 1, 1])
    vocab = 32
    logits = torch.zeros(3, vocab)
    bs = torch.zeros(3)
    node_10 = NumpyTrie(trie).child(0, 10)
    nodes = torch.tensor([0, node_10, 0], dtype=torch.int32)
    got, _ = compare_beam_step(backend, trie, logits, bs, nodes, beams=3, K=8, alpha=0.0)
    assert got["beam"].cpu().tolist() == [[0, 0, 1, 1, 2, 2, -1, -1]]
    assert got["token"].cpu().tolist() == [[10, 20, 11, 14, 10, 20, -1, -1]]
    s = got["score"].cpu()
    assert torch.isinf(s[0, 6:]).all() and (s[0, :6] == s[0, 0]).all()


@pytest.mark.parametrize("opts", [dict(), dict(temperature=0.7), dict(renormalize=True)])
def test_beam_step_zero_weight_on_minus_inf_is_not_nan(backend, opts) -> None:
    """alpha = 1 gives the IG~ = 1 child weight 0: its -inf log-probability scores -inf, ranked
    after every finite candidate (0 * -inf would be NaN, which the select ranks first); with
    renormalize, a beam whose children are all -inf scores -inf too. CUDA matches the CPU op."""
    paths = [[10, 11, 12, 2], [10, 11, 13, 2], [10, 14, 2], [20, 21, 2]]
    trie = build(paths, [4, 2, 1, 1])  # IG~: root {10: 0, 20: 1}, (10,) {11: 0, 14: 1}
    t = NumpyTrie(trie)
    vocab = 32
    logits = torch.randn(3, vocab)
    logits[0, 20] = float("-inf")
    logits[1, 14] = float("-inf")
    logits[2, 21] = float("-inf")  # the only child of (20,)
    nodes = torch.tensor([0, t.child(0, 10), t.child(0, 20)], dtype=torch.int32)
    bs = torch.tensor([-1.0, -2.0, -3.0])
    kw = dict(beams=3, alpha=1.0, **opts)
    compare_beam_step(
        backend, trie, logits, bs, nodes, K=2, **kw
    )  # the finite candidates: (0, 10), (1, 11)
    dev = trie.to(backend)
    got = run_beam_step(native_op("beam_step", backend), dev.native_view(), logits.to(backend),
                        bs.to(backend), nodes.to(backend), num_candidates=6, **kw)  # fmt: skip
    sync(backend)
    got = {f: v.cpu() for f, v in got.items()}
    assert not torch.isnan(got["score"]).any() and not torch.isnan(got["logp"]).any()
    assert torch.isfinite(got["score"][0, :2]).all()
    assert (got["score"][0, 2:5] == float("-inf")).all()
    assert sorted(got["beam"][0, :2].tolist()) == [0, 1]
    assert got["beam"][0, 2:].tolist() == [0, 1, 2, -1]  # -inf ties in (beam, token) order
    assert got["token"][0, 2:].tolist() == [20, 14, 21, -1]
    cpu = run_beam_step(native_op("beam_step", "cpu"), trie.native_view(), logits, bs, nodes,
                        num_candidates=6, **kw)  # fmt: skip
    for f in BEAM_FIELDS:
        torch.testing.assert_close(got[f], cpu[f], rtol=2e-5, atol=2e-5, msg=f)


def test_beam_step_strided_logits_and_graph_capture(backend) -> None:
    """A strided logits view matches the reference; on CUDA the step also captures into a CUDA
    graph (no host synchronisation inside) whose replay gives the eager outputs."""
    rng = np.random.default_rng(23)
    vocab = 4096
    paths, weights = weighted_catalog(rng, 500, vocab, alphabet=80)
    trie = build(paths, weights, vocab=vocab)
    t = NumpyTrie(trie)
    batch, beams, K = 8, 4, 8
    logits, bs, nodes = beam_inputs(rng, t, batch, beams, vocab, torch.bfloat16, inactive=0.1)
    big = torch.zeros(batch * beams, vocab + 64, dtype=torch.bfloat16, device=backend)
    big[:, :vocab] = logits.to(backend)
    view = big[:, :vocab]  # row stride vocab + 64, still 16-byte aligned
    gpu = trie.to(backend)
    step = native_op("beam_step", backend)
    kw = dict(beams=beams, alpha=0.2, num_candidates=K)
    ref, table = ref_beam_step(t, logits, bs, nodes, **kw)
    bs_d, nodes_d = bs.to(backend), nodes.to(backend)
    eager = run_beam_step(step, gpu.native_view(), view, bs_d, nodes_d, **kw)
    sync(backend)
    check_beam_step(eager, ref, table, vocab=vocab, atol=2e-4, rtol=2e-5)
    if backend == "cpu":
        return
    # No host synchronisation inside: the step captures into a CUDA graph and replays.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(side):
        graph_out = run_beam_step(step, gpu.native_view(), view, bs_d, nodes_d,
                                  **kw)  # warm-up  # fmt: skip
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            graph_out = run_beam_step(step, gpu.native_view(), view, bs_d, nodes_d,
                                      **kw)  # fmt: skip
    for f in BEAM_FIELDS:
        graph_out[f].fill_(7)
    graph.replay()
    torch.cuda.synchronize()
    for f in BEAM_FIELDS:
        assert torch.equal(graph_out[f], eager[f]), f


@pytest.mark.slow
def test_beam_step_million_item_catalog(backend) -> None:
    """A million items with a 30k+ root fanout."""
    rng = np.random.default_rng(24)
    vocab = 151_936
    n = 1_000_000
    first = rng.integers(3, vocab, size=n)
    rest = rng.integers(3, vocab, size=(n, 3))
    paths = np.concatenate([first[:, None] % 40_000 + 3, rest, np.full((n, 1), 2)], axis=1)
    trie = build(paths.tolist(), vocab=vocab)
    assert trie.num_items == n and trie.max_fanout >= 30_000
    t = NumpyTrie(trie)
    batch, beams = 4, 10
    logits, bs, nodes = beam_inputs(rng, t, batch, beams, vocab, torch.bfloat16, inactive=0.1)
    nodes[beams : 2 * beams] = 0  # batch row 1 at the root
    compare_beam_step(backend, trie, logits, bs, nodes, beams=beams, K=2 * beams, alpha=0.2)
