"""The node-filter op (``node_filters``: per-node allowed masks and CF log-sum-exp scores) against
brute-force enumeration of the catalog's items, on the CPU and (where present) on CUDA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import igdbeam
from cuda_testing import _C, cuda_marks, needs_gpu
from cuda_testing import stream as cuda_stream
from filter_testing import filter_catalog, lse, node_of, ref_node_arrays
from igdbeam.ops.node_filters import node_filters
from oracles.trie import ReferenceTrie

NEG_INF = -math.inf


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=cuda_marks)])
def backend(request: pytest.FixtureRequest) -> str:
    """The device the node filters are built on."""
    return request.param


# ------------------------------------------------------------------------------ node arrays
@pytest.mark.parametrize(("with_mask", "with_scores"), [(True, False), (False, True), (True, True)])
def test_node_arrays_match_brute_force(backend: str, with_mask: bool, with_scores: bool) -> None:
    """Per-node allowed flags and CF log-sum-exp scores equal the enumerated items'."""
    paths, weights = filter_catalog()
    trie = igdbeam.ItemTrie.from_token_ids(paths, weights)
    ref = ReferenceTrie(paths, weights)
    g = torch.Generator().manual_seed(5)
    n_items, rows = len(paths), 4
    mask = torch.rand(rows, n_items, generator=g) < 0.3 if with_mask else None
    if mask is not None:
        mask[2] = False  # a row with nothing allowed
        mask[3] = True
        mask[3, 3] = False  # one of the duplicate's two items stays allowed
    scores = torch.randn(rows, n_items, generator=g).double() * 2 if with_scores else None
    if scores is not None:
        scores[1, :5] = NEG_INF
    f = node_filters(trie.to(backend), mask, scores, item_score_weight=0.5)
    assert f is not None and f.num_rows == rows and f.score_weight == 0.5
    assert f.device is not None and f.device.type == backend
    for r in range(rows):
        want = ref_node_arrays(
            ref, None if mask is None else mask[r], None if scores is None else scores[r]
        )
        for prefix, (allowed, s) in want.items():
            node = node_of(trie, prefix)
            if with_mask:
                assert bool(f.node_mask[r, node]) == allowed, (r, prefix)
            else:
                assert f.node_mask is None
            if with_scores:
                got = float(f.node_scores[r, node])
                if s == NEG_INF:
                    assert got == NEG_INF, (r, prefix)
                else:
                    assert got == pytest.approx(s, rel=1e-5, abs=1e-5), (r, prefix)
    if with_mask:
        assert not f.node_mask[2].any()


def test_single_row_inputs_broadcast_and_threads_agree() -> None:
    """A single mask or score row broadcasts over num_rows and equals the row-by-row op."""
    paths, weights = filter_catalog(60, seed=3)
    trie = igdbeam.ItemTrie.from_token_ids(paths, weights)
    g = torch.Generator().manual_seed(6)
    mask = torch.rand(5, len(paths), generator=g) < 0.5
    pop = torch.randn(len(paths), generator=g)  # one score row for every prompt
    f = node_filters(trie, mask, pop, item_score_weight=2.0, num_rows=5)
    for r in range(5):
        one = node_filters(trie, mask[r], pop)
        assert torch.equal(f.node_mask[r], one.node_mask[0])
        torch.testing.assert_close(f.node_scores[r], one.node_scores[0], rtol=0, atol=0)
    shared = node_filters(trie, None, pop, num_rows=5)
    assert shared.num_rows == 1  # one row of node arrays serves all prompts
    big = torch.rand(200, len(paths), generator=g) < 0.3  # 4 groups of 64 rows, the last partial
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = node_filters(trie, big, None)
    finally:
        torch.set_num_threads(max(2, threads))
    threaded = node_filters(trie, big, None)
    torch.set_num_threads(threads)
    assert serial.mask_words.shape == (4, trie.num_nodes)
    assert torch.equal(serial.mask_words, threaded.mask_words)
    unpacked = serial.node_mask
    for r in (0, 63, 64, 127, 128, 199):
        assert torch.equal(unpacked[r], node_filters(trie, big[r]).node_mask[0])
    assert (serial.mask_words[3] >> 8 == 0).all()  # no bits past the last row


def test_telescoping_cf_terms_sum_to_the_item_log_probability() -> None:
    """sum over a path of S(child) - S(parent) == S(leaf) - S(root) = log p_cf(item | allowed)."""
    paths, weights = filter_catalog(40, seed=8)
    trie = igdbeam.ItemTrie.from_token_ids(paths, weights)
    ref = ReferenceTrie(paths, weights)
    g = torch.Generator().manual_seed(9)
    scores = torch.randn(2, len(paths), generator=g) * 3
    mask = torch.rand(2, len(paths), generator=g) < 0.7
    f = node_filters(trie, mask, scores)
    S = f.node_scores.double()
    for r in range(2):
        allowed = [i for i in range(len(paths)) if mask[r, i]]
        log_z = lse([float(scores[r, i]) for i in allowed])
        for i in allowed:
            path = tuple(paths[i])
            nodes = [node_of(trie, path[:d]) for d in range(len(path) + 1)]
            total = sum(float(S[r, c] - S[r, p]) for p, c in zip(nodes, nodes[1:], strict=False))
            leaf_items = ref.items_of_leaf[path]
            want = lse([float(scores[r, j]) for j in leaf_items if mask[r, j]]) - log_z
            assert total == pytest.approx(want, abs=1e-4)
            if len(leaf_items) == 1:  # one item owns the path: its CF log-probability
                assert total == pytest.approx(float(scores[r, i]) - log_z, abs=1e-4)


def test_exclude_items_and_bad_inputs() -> None:
    """Excluded items and malformed masks, scores or row counts."""
    paths, _ = filter_catalog(10)
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    m = igdbeam.exclude_items(trie, [[0, 3, 3], [], np.array([10])])
    assert m.shape == (3, trie.num_items) and m.dtype == torch.bool
    assert m.sum(1).tolist() == [trie.num_items - 2, trie.num_items, trie.num_items - 1]
    assert not m[0, 0] and not m[0, 3] and not m[2, 10]
    with pytest.raises(igdbeam.InvalidIdError, match="outside the catalog"):
        igdbeam.exclude_items(trie, [[1], [trie.num_items]])
    with pytest.raises(igdbeam.InvalidIdError):
        igdbeam.exclude_items(trie, [[1.5]])
    n = trie.num_items
    assert node_filters(trie) is None
    assert node_filters(trie, None, torch.zeros(n), item_score_weight=0.0) is None
    with pytest.raises(ValueError, match="shape"):
        node_filters(trie, torch.ones(2, n + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        node_filters(trie, torch.ones(2, n))
    with pytest.raises(ValueError, match="finite"):
        node_filters(trie, None, torch.full((1, n), math.nan))
    with pytest.raises(ValueError, match="finite"):
        node_filters(trie, None, torch.zeros(n), item_score_weight=math.inf)
    with pytest.raises(ValueError, match="rows"):
        node_filters(trie, torch.ones(2, n, dtype=torch.bool), torch.zeros(3, n))
    with pytest.raises(ValueError, match="rows"):
        node_filters(trie, torch.ones(2, n, dtype=torch.bool), num_rows=3)


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("broadcast_scores", [False, True])
def test_cuda_node_filters_match_cpu(broadcast_scores: bool) -> None:
    """The CUDA build_node_filters kernel equals the CPU op (scores per row or broadcast)."""
    paths, weights = filter_catalog(60, seed=17)
    cpu = igdbeam.ItemTrie.from_token_ids(paths, weights)
    gpu = cpu.to("cuda")
    g = torch.Generator().manual_seed(18)
    rows = 5
    mask = torch.rand(rows, len(paths), generator=g) < 0.5
    mask[0] = False
    scores = torch.randn(1 if broadcast_scores else rows, len(paths), generator=g)
    want = node_filters(cpu, mask, scores)
    m, s = mask.cuda().contiguous(), scores.cuda().contiguous()
    out_mask = torch.empty((rows + 63) // 64, cpu.num_nodes, dtype=torch.int64).cuda()
    out_scores = torch.empty(rows, cpu.num_nodes, dtype=torch.float32).cuda()
    arrays = gpu.arrays()
    status = _C.build_node_filters(
        gpu.native_view(),
        arrays["leaf_nodes"].data_ptr(),
        arrays["leaf_item_offsets"].data_ptr(),
        arrays["leaf_items"].data_ptr(),
        gpu.num_leaves,
        gpu.num_items,
        rows,
        m.data_ptr(),
        m.stride(0),
        s.data_ptr(),
        0 if broadcast_scores else s.stride(0),
        out_mask.data_ptr(),
        out_scores.data_ptr(),
        1,  # num_threads (CPU only)
        gpu.max_depth,
        1,  # device: CUDA
        cuda_stream(),
    )
    assert status is None
    torch.cuda.synchronize()
    assert torch.equal(out_mask.cpu(), want.mask_words)
    torch.testing.assert_close(out_scores.cpu(), want.node_scores, atol=1e-5, rtol=1e-5)
