"""The CUDA beam step's multi-block (sliced) select, its candidate-bound hint, graph capture and
argument checks (CUDA only: the CPU step has no select slices)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import igdbeam
from beam_step_testing import BEAM_FIELDS, compare_beam_step, run_beam_step
from cuda_testing import (
    NumpyTrie,
    build,
    check_beam_step,
    cuda_marks,
    native_op,
    ref_beam_step,
)
from igdbeam.errors import NativeArgumentError

pytestmark = cuda_marks

STEP = native_op("beam_step", "cuda")


class SlicedCatalog:
    """A root with 20k children; its first child continues into 3k children, the others end."""

    VOCAB = 50_000

    def __init__(self, rng, *, root=20_000, wide=3_000):
        first = rng.choice(np.arange(3, self.VOCAB), size=root, replace=False)
        second = rng.choice(np.arange(3, self.VOCAB), size=wide, replace=False)
        paths = [[int(first[0]), int(t), 2] for t in second]
        paths += [[int(t), 2] for t in first[1:]]
        self.trie = build(paths, vocab=self.VOCAB)
        self.t = NumpyTrie(self.trie)
        self.wide = self.t.child(0, int(first[0]))  # 3k children
        self.narrow = self.t.child(0, int(first[1]))  # one child, a leaf
        self.leaf = self.t.child(self.narrow, 2)


@pytest.fixture(scope="module")
def sliced() -> SlicedCatalog:
    """The sliced catalog, shared by the module."""
    cat = SlicedCatalog(np.random.default_rng(25))
    assert cat.trie.max_fanout == 20_000
    return cat


def _sliced_inputs(rng, cat: SlicedCatalog, beams, dtype):
    """Batch rows that exercise the sliced select (the bound beams * 20k is large for all):

    0: every beam at the root (beams * 20k candidates); 1: root, leaf and inactive beams mixed
    (empty beams between full ones); 2: two beams at a 3k-child node (real count far below the
    bound: trailing slices are empty); 3: beams with one child each (one slice holds the row);
    4: no active beam (padding only).
    """
    wide, narrow, leaf = cat.wide, cat.narrow, cat.leaf
    rows = 5 * beams
    nodes = np.full(rows, -1, dtype=np.int32)
    nodes[:beams] = 0
    nodes[beams : 2 * beams] = [leaf, 0, -1, wide] + [0, leaf] * ((beams - 4) // 2)
    nodes[2 * beams + 1] = wide
    nodes[2 * beams + 3] = wide
    nodes[3 * beams : 4 * beams] = narrow
    logits = (torch.randn(rows, cat.VOCAB) * 4).to(dtype)
    beam_scores = torch.from_numpy(rng.normal(-5, 2, size=rows).astype(np.float32))
    return logits, beam_scores, torch.from_numpy(nodes)


def _run_slices(trie, logits, bs, nodes, slices, **kw):
    """The CUDA step with ``slices`` select slices, outputs copied to the CPU."""
    got = run_beam_step(STEP, trie.to("cuda").native_view(), logits.cuda(),
                        bs.cuda(), nodes.cuda(), select_slices=slices,
                        **kw)  # fmt: skip
    torch.cuda.synchronize()
    return {f: v.cpu() for f, v in got.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "opts",
    [dict(alpha=0.3, K=300), dict(alpha=0.5, K=37, renormalize=True, temperature=0.8)],
    ids=["full", "renorm"],
)
def test_beam_step_sliced_select_is_bit_identical(sliced, dtype, opts) -> None:
    """Any number of select slices gives exactly the single-block outputs, which match the
    reference and the CPU op."""
    rng = np.random.default_rng(26)
    beams, vocab, trie = 8, sliced.VOCAB, sliced.trie
    logits, bs, nodes = _sliced_inputs(rng, sliced, beams, dtype)
    opts = dict(opts)
    K = opts.pop("K")
    kw = dict(beams=beams, alpha=opts.pop("alpha"), num_candidates=K, **opts)
    one = _run_slices(trie, logits, bs, nodes, 1, **kw)
    ref, table = ref_beam_step(sliced.t, logits, bs, nodes, **kw)
    check_beam_step(one, ref, table, vocab=vocab, atol=2e-4, rtol=2e-5)
    assert (one["beam"][4] == -1).all() and (one["beam"][3] >= 0).sum() == beams
    for slices in (0, 2, 7):  # 0: the step's own choice
        got = _run_slices(trie, logits, bs, nodes, slices, **kw)
        for f in BEAM_FIELDS:
            assert torch.equal(got[f], one[f]), (slices, f)
    compare_beam_step("cuda", trie, logits, bs, nodes, K=K, **{k: v for k, v in kw.items()
                                                    if k != "num_candidates"})  # fmt: skip


@pytest.mark.parametrize("K", [1, 1024])
def test_beam_step_sliced_select_exact_ties(sliced, K) -> None:
    """All candidates tie (equal logits and beam scores, alpha 0): every slice count returns the
    first K candidates in (beam, token) order, the order a single block gives."""
    beams, vocab, trie, t, wide = 6, sliced.VOCAB, sliced.trie, sliced.t, sliced.wide
    row1 = [sliced.narrow, -1, wide, sliced.leaf, 0, -1]
    nodes = torch.tensor([-1, 0, wide, 0, -1, wide] + row1, dtype=torch.int32)
    logits = torch.zeros(2 * beams, vocab, dtype=torch.bfloat16)
    bs = torch.zeros(2 * beams)
    kw = dict(beams=beams, alpha=0.0, num_candidates=K)
    one = _run_slices(trie, logits, bs, nodes, 1, **kw)
    lo, hi = t.children(0)
    root_tokens = t.token[lo:hi]
    want = [(1, int(x)) for x in root_tokens[:K]]
    got = list(zip(one["beam"][0].tolist(), one["token"][0].tolist(), strict=True))
    assert got == want
    wlo, whi = t.children(wide)
    want = [(0, 2)] + [(2, int(x)) for x in t.token[wlo:whi]] + [(4, int(x)) for x in root_tokens]
    got = list(zip(one["beam"][1].tolist(), one["token"][1].tolist(), strict=True))
    assert got == want[:K]
    for slices in (0, 3, 16):
        got = _run_slices(trie, logits, bs, nodes, slices, **kw)
        for f in BEAM_FIELDS:
            assert torch.equal(got[f], one[f]), (slices, f)


def test_beam_step_candidate_bound_hint_changes_nothing(sliced) -> None:
    """The public op's max_candidates_per_row only sizes the select: tiny, exact, huge and no
    bound give the same bits (and igdbeam.generate's root / inner bounds are the trie's)."""
    rng = np.random.default_rng(28)
    beams, trie = 8, sliced.trie.to("cuda")
    logits, bs, nodes = _sliced_inputs(rng, sliced, beams, torch.float32)
    args = (trie, logits.cuda(), bs.cuda(), nodes.cuda())
    kw = dict(beams=beams, num_candidates=40, alpha=0.3)
    base = igdbeam.beam_step(*args, **kw)
    for bound in (1, beams * sliced.trie.fanout_bounds()[0], 10**9):
        got = igdbeam.beam_step(*args, max_candidates_per_row=bound, **kw)
        for f in BEAM_FIELDS:
            assert torch.equal(getattr(got, f), getattr(base, f)), (bound, f)
    root, inner = sliced.trie.fanout_bounds()
    lo, hi = sliced.t.children(0)
    assert root == hi - lo == 20_000 and inner == 3_000


def test_beam_step_sliced_graph_capture(sliced) -> None:
    """The sliced select (one scratch allocation, slice and merge kernels) has no host
    synchronisation: it captures into a CUDA graph whose replay gives the single-block outputs."""
    rng = np.random.default_rng(27)
    beams = 8
    logits, bs, nodes = _sliced_inputs(rng, sliced, beams, torch.bfloat16)
    gpu = sliced.trie.to("cuda")
    x, bs_d, nodes_d = logits.cuda(), bs.cuda(), nodes.cuda()
    kw = dict(beams=beams, alpha=0.2, num_candidates=64)
    one = run_beam_step(STEP, gpu.native_view(), x, bs_d, nodes_d,
                        select_slices=1, **kw)  # fmt: skip
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(side):
        run_beam_step(STEP, gpu.native_view(), x, bs_d, nodes_d,
                      select_slices=5, **kw)  # warm-up  # fmt: skip
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            got = run_beam_step(STEP, gpu.native_view(), x, bs_d, nodes_d,
                                select_slices=5, **kw)  # fmt: skip
    for f in BEAM_FIELDS:
        got[f].fill_(7)
    graph.replay()
    torch.cuda.synchronize()
    for f in BEAM_FIELDS:
        assert torch.equal(got[f], one[f]), f


def test_beam_step_rejects_bad_arguments() -> None:
    """Bad candidate counts, slice counts and candidate bounds raise typed errors."""
    trie = build([[10, 2], [11, 2]]).to("cuda")
    logits = torch.zeros(2, 16, device="cuda")
    bs = torch.zeros(2, device="cuda")
    nodes = torch.zeros(2, dtype=torch.int32, device="cuda")
    with pytest.raises(NativeArgumentError, match="num_candidates"):
        run_beam_step(STEP, trie.native_view(), logits, bs, nodes, beams=2, alpha=0.1,
                      num_candidates=0)  # fmt: skip
    with pytest.raises(ValueError, match="select_slices"):
        run_beam_step(STEP, trie.native_view(), logits, bs, nodes, beams=2, alpha=0.1,
                      num_candidates=2, select_slices=-1)  # fmt: skip
    with pytest.raises(ValueError, match="candidate_bound"):
        run_beam_step(STEP, trie.native_view(), logits, bs, nodes, beams=2, alpha=0.1,
                      num_candidates=2, candidate_bound=-1)  # fmt: skip
