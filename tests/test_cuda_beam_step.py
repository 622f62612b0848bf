"""CUDA fused beam step vs the float64 reference and the C++ kernel (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import igdbeam
from cuda_testing import (
    DTYPES,
    NO_FILTER,
    NumpyTrie,
    build,
    check_beam_step,
    cuda_marks,
    native_op,
    random_catalog,
    ref_beam_step,
    wide_root_catalog,
)
from igdbeam.errors import NativeArgumentError

pytestmark = cuda_marks

FIELDS = ("score", "logp", "beam", "token", "node")
CUDA_STEP, CPU_STEP = native_op("beam_step", "cuda"), native_op("beam_step", "cpu")


def run_beam_step(op, view, logits, beam_scores, nodes, *, beams, alpha, num_candidates,
                  temperature=1.0, renormalize=False, select_slices=0,
                  candidate_bound=0):  # fmt: skip
    """Call ``op`` (CUDA_STEP or CPU_STEP) on tensors of one device; return the output dict.

    select_slices (read by CUDA only) is the binding's test hook: 0 lets the step choose how many
    blocks select each batch row's candidates, > 0 forces that many slices per row;
    candidate_bound (CUDA only, 0: from the trie) is the bound that sizes the automatic choice.
    """
    rows, vocab = logits.shape
    batch = rows // beams
    dev = logits.device
    shape = (batch, num_candidates)
    out = {
        "score": torch.empty(shape, dtype=torch.float32, device=dev),
        "logp": torch.empty(shape, dtype=torch.float32, device=dev),
        "beam": torch.empty(shape, dtype=torch.int32, device=dev),
        "token": torch.empty(shape, dtype=torch.int64, device=dev),
        "node": torch.empty(shape, dtype=torch.int32, device=dev),
    }
    args = [view, logits.data_ptr(), DTYPES[logits.dtype], batch, beams, vocab, logits.stride(0),
            beam_scores.data_ptr(), nodes.data_ptr(), alpha, temperature, renormalize,
            num_candidates, *(out[f].data_ptr() for f in FIELDS), *NO_FILTER, select_slices,
            candidate_bound]  # fmt: skip
    op(*args)
    return out


def _compare(trie, logits, beam_scores, nodes, *, beams, alpha, K, temperature=1.0,
             renormalize=False, cpu=True):  # fmt: skip
    kw = dict(beams=beams, alpha=alpha, num_candidates=K, temperature=temperature,
              renormalize=renormalize)  # fmt: skip
    gpu = trie.to("cuda")
    got = run_beam_step(CUDA_STEP, gpu.native_view(), logits.cuda(), beam_scores.cuda(),
                        nodes.cuda(), **kw)  # fmt: skip
    torch.cuda.synchronize()
    ref, table = ref_beam_step(NumpyTrie(trie), logits, beam_scores, nodes, **kw)
    atol, rtol = 2e-4, 2e-5
    check_beam_step(got, ref, table, vocab=logits.shape[1], atol=atol, rtol=rtol)
    if cpu:
        c = run_beam_step(
            CPU_STEP, trie.native_view(), logits.contiguous(), beam_scores, nodes, **kw
        )
        check_beam_step(got, {f: c[f].double().numpy() if f in ("score", "logp")
                              else c[f].numpy().astype(np.int64) for f in FIELDS},
                        table, vocab=logits.shape[1], atol=atol, rtol=rtol)  # fmt: skip
    return got, ref


def _beam_inputs(rng, t: NumpyTrie, batch, beams, vocab, dtype, *, inactive=0.2):
    rows = batch * beams
    logits = (torch.randn(rows, vocab) * 4).to(dtype)
    beam_scores = torch.from_numpy(rng.normal(-5, 2, size=rows).astype(np.float32))
    nodes = torch.from_numpy(t.random_nodes(rng, rows).astype(np.int32))
    dead = rng.random(rows) < inactive
    nodes[torch.from_numpy(dead)] = -1
    leaves = np.nonzero(t.offsets[1:] == t.offsets[:-1])[0]
    nodes[:beams] = -1  # batch row 0: no active beam at all, only padding
    nodes[-1] = int(leaves[0])  # a leaf: inactive
    return logits, beam_scores, nodes


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
def test_beam_step_random(dtype, opts) -> None:
    rng = np.random.default_rng(21)
    vocab = 3001  # odd: unaligned rows
    paths, weights = random_catalog(rng, 400, alphabet=50, vocab=vocab)
    trie = build(paths, weights, vocab=vocab)
    t = NumpyTrie(trie)
    batch, beams = 6, 5
    logits, bs, nodes = _beam_inputs(rng, t, batch, beams, vocab, dtype)
    for K in (2 * beams, 3, 64):  # 64 > most rows' candidates: padding
        _compare(trie, logits, bs, nodes, beams=beams, K=K, **opts)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_beam_step_wide_root_chunked_topk(dtype) -> None:
    rng = np.random.default_rng(22)
    vocab = 151_936
    paths = wide_root_catalog(rng, 60_000, vocab)
    trie = build(paths, vocab=vocab)
    t = NumpyTrie(trie)
    batch, beams = 3, 4
    logits, bs, nodes = _beam_inputs(rng, t, batch, beams, vocab, dtype, inactive=0.0)
    nodes[beams:] = 0  # every beam of rows 1..2 at the root: 240k candidates per row
    nodes[beams + 1] = 5  # one beam elsewhere
    for K in (8, 128):
        _compare(trie, logits, bs, nodes, beams=beams, K=K, alpha=0.3)
    _compare(trie, logits, bs, nodes, beams=beams, K=20, alpha=0.3, renormalize=True)


def test_beam_step_exact_ties_order() -> None:
    """Equal scores are ordered by (beam, token); padding follows with -inf and -1."""
    paths = [[10, 11, 12, 2], [10, 11, 13, 2], [10, 14, 2], [20, 21, 2]]
    trie = build(paths, [4, 2, 1, 1])
    vocab = 32
    logits = torch.zeros(3, vocab)
    bs = torch.zeros(3)
    node_10 = NumpyTrie(trie).child(0, 10)
    nodes = torch.tensor([0, node_10, 0], dtype=torch.int32)
    got, _ = _compare(trie, logits, bs, nodes, beams=3, K=8, alpha=0.0)
    assert got["beam"].cpu().tolist() == [[0, 0, 1, 1, 2, 2, -1, -1]]
    assert got["token"].cpu().tolist() == [[10, 20, 11, 14, 10, 20, -1, -1]]
    s = got["score"].cpu()
    assert torch.isinf(s[0, 6:]).all() and (s[0, :6] == s[0, 0]).all()


@pytest.mark.parametrize("opts", [dict(), dict(temperature=0.7), dict(renormalize=True)])
def test_beam_step_zero_weight_on_minus_inf_is_not_nan(opts) -> None:
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
    _compare(trie, logits, bs, nodes, K=2, **kw)  # the finite candidates: (0, 10), (1, 11)
    gpu = trie.to("cuda")
    got = run_beam_step(CUDA_STEP, gpu.native_view(), logits.cuda(), bs.cuda(),
                        nodes.cuda(), num_candidates=6, **kw)  # fmt: skip
    torch.cuda.synchronize()
    got = {f: v.cpu() for f, v in got.items()}
    assert not torch.isnan(got["score"]).any() and not torch.isnan(got["logp"]).any()
    assert torch.isfinite(got["score"][0, :2]).all()
    assert (got["score"][0, 2:5] == float("-inf")).all()
    assert sorted(got["beam"][0, :2].tolist()) == [0, 1]
    assert got["beam"][0, 2:].tolist() == [0, 1, 2, -1]  # -inf ties in (beam, token) order
    assert got["token"][0, 2:].tolist() == [20, 14, 21, -1]
    cpu = run_beam_step(CPU_STEP, trie.native_view(), logits, bs, nodes,
                        num_candidates=6, **kw)  # fmt: skip
    for f in FIELDS:
        torch.testing.assert_close(got[f], cpu[f], rtol=2e-5, atol=2e-5, msg=f)


def test_beam_step_strided_logits_and_graph_capture() -> None:
    rng = np.random.default_rng(23)
    vocab = 4096
    paths, weights = random_catalog(rng, 500, alphabet=80, vocab=vocab)
    trie = build(paths, weights, vocab=vocab)
    t = NumpyTrie(trie)
    batch, beams, K = 8, 4, 8
    logits, bs, nodes = _beam_inputs(rng, t, batch, beams, vocab, torch.bfloat16, inactive=0.1)
    big = torch.zeros(batch * beams, vocab + 64, dtype=torch.bfloat16, device="cuda")
    big[:, :vocab] = logits.cuda()
    view = big[:, :vocab]  # row stride vocab + 64, still 16-byte aligned
    gpu = trie.to("cuda")
    kw = dict(beams=beams, alpha=0.2, num_candidates=K)
    ref, table = ref_beam_step(t, logits, bs, nodes, **kw)
    bs_d, nodes_d = bs.cuda(), nodes.cuda()
    eager = run_beam_step(CUDA_STEP, gpu.native_view(), view, bs_d, nodes_d,
                          **kw)  # fmt: skip
    torch.cuda.synchronize()
    check_beam_step(eager, ref, table, vocab=vocab, atol=2e-4, rtol=2e-5)
    # No host synchronisation inside: the step captures into a CUDA graph and replays.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(side):
        graph_out = run_beam_step(CUDA_STEP, gpu.native_view(), view, bs_d, nodes_d,
                                  **kw)  # warm-up  # fmt: skip
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            graph_out = run_beam_step(CUDA_STEP, gpu.native_view(), view, bs_d, nodes_d,
                                      **kw)  # fmt: skip
    for f in FIELDS:
        graph_out[f].fill_(7)
    graph.replay()
    torch.cuda.synchronize()
    for f in FIELDS:
        assert torch.equal(graph_out[f], eager[f]), f


@pytest.mark.slow
def test_beam_step_million_item_catalog() -> None:
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
    logits, bs, nodes = _beam_inputs(rng, t, batch, beams, vocab, torch.bfloat16, inactive=0.1)
    nodes[beams : 2 * beams] = 0  # batch row 1 at the root
    _compare(trie, logits, bs, nodes, beams=beams, K=2 * beams, alpha=0.2)


# ------------------------------------------------------------------ multi-block (sliced) select
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
    got = run_beam_step(CUDA_STEP, trie.to("cuda").native_view(), logits.cuda(),
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
        for f in FIELDS:
            assert torch.equal(got[f], one[f]), (slices, f)
    _compare(trie, logits, bs, nodes, K=K, **{k: v for k, v in kw.items()
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
        for f in FIELDS:
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
        for f in FIELDS:
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
    one = run_beam_step(CUDA_STEP, gpu.native_view(), x, bs_d, nodes_d,
                        select_slices=1, **kw)  # fmt: skip
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(side):
        run_beam_step(CUDA_STEP, gpu.native_view(), x, bs_d, nodes_d,
                      select_slices=5, **kw)  # warm-up  # fmt: skip
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            got = run_beam_step(CUDA_STEP, gpu.native_view(), x, bs_d, nodes_d,
                                select_slices=5, **kw)  # fmt: skip
    for f in FIELDS:
        got[f].fill_(7)
    graph.replay()
    torch.cuda.synchronize()
    for f in FIELDS:
        assert torch.equal(got[f], one[f]), f


def test_beam_step_rejects_bad_arguments() -> None:
    trie = build([[10, 2], [11, 2]]).to("cuda")
    logits = torch.zeros(2, 16, device="cuda")
    bs = torch.zeros(2, device="cuda")
    nodes = torch.zeros(2, dtype=torch.int32, device="cuda")
    with pytest.raises(NativeArgumentError, match="num_candidates"):
        run_beam_step(CUDA_STEP, trie.native_view(), logits, bs, nodes, beams=2, alpha=0.1,
                      num_candidates=0)  # fmt: skip
    with pytest.raises(ValueError, match="select_slices"):
        run_beam_step(CUDA_STEP, trie.native_view(), logits, bs, nodes, beams=2, alpha=0.1,
                      num_candidates=2, select_slices=-1)  # fmt: skip
    with pytest.raises(ValueError, match="candidate_bound"):
        run_beam_step(CUDA_STEP, trie.native_view(), logits, bs, nodes, beams=2, alpha=0.1,
                      num_candidates=2, candidate_bound=-1)  # fmt: skip
