"""The logits-processor step op (``_C.processor_step``) on every backend (CPU always, CUDA where
built and present) against the float64 numpy reference; CUDA also against the CPU op's nodes
and statuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cuda_testing import (
    DTYPES,
    NO_FILTER,
    NumpyTrie,
    assert_within_reference_error,
    build,
    cuda_marks,
    native_op,
    plain_torch_processor_step,
    ref_processor_step,
    weighted_catalog,
    wide_root_paths,
)

CPU_STEP = native_op("processor_step", "cpu")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=cuda_marks)])
def backend(request: pytest.FixtureRequest) -> str:
    """The device the step runs on."""
    return request.param


def _sync(backend: str) -> None:
    if backend == "cuda":
        torch.cuda.synchronize()


def _check_scores(got, want, base) -> None:
    """float32 scores within a fixed tolerance of the float64 reference ``want``; bfloat16 /
    float16 scores by the low-precision rule: error at most 2x that of plain PyTorch in the same
    dtype (``base``)."""
    if got.dtype == torch.float32:
        torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-5, equal_nan=True)
    else:
        assert_within_reference_error(got, base, want)


def _inputs(rng, paths, rows, prompt_len, vocab, dtype, *, off_rate=0.15):
    """Prompt + a random prefix of an item path per row; some rows off the trie, some at a leaf."""
    gen = []
    for r in range(rows):
        p = list(paths[int(rng.integers(len(paths)))])
        cut = len(p) if r % 7 == 3 else int(rng.integers(0, len(p)))
        g = p[:cut]
        if g and rng.random() < off_rate:
            g[-1] = 1  # token 1 is never in the catalog
        gen.append(g)
    width = max(len(g) for g in gen)
    # The generated parts are right-aligned: row r's prompt is the first plens[r] columns, and rows
    # with the same prompt length are stepped together (the walk reads input_ids[:, prompt_len:]).
    ids = np.zeros((rows, prompt_len + width), dtype=np.int64)
    plens = []
    for r, g in enumerate(gen):
        ids[r, prompt_len + width - len(g) :] = g
        plens.append(prompt_len + width - len(g))
    scores = torch.randn(rows, vocab, dtype=torch.float32) * 3
    return ids, plens, scores.to(dtype)


def _run_rows(op, view, ids, plen, scores, params, device):
    rows = ids.shape[0]
    nodes = torch.empty(rows, dtype=torch.int32, device=device)
    status = torch.empty(rows, dtype=torch.int32, device=device)
    op(view, ids.data_ptr(), rows, ids.shape[1], ids.stride(0), plen, scores.data_ptr(),
       DTYPES[scores.dtype], scores.shape[1], scores.stride(0), *params, nodes.data_ptr(),
       status.data_ptr(), *NO_FILTER)  # fmt: skip
    return nodes, status


def _check(backend, trie, ids_np, plens, scores, params):
    """Run row groups of equal prompt length on ``backend``, compare nodes and statuses with the
    reference (and, on CUDA, with the CPU op), then the scores of all rows at once."""
    dev = trie.to(backend)
    alpha, temperature, renormalize, eos = params
    t = NumpyTrie(trie)
    got_all, want_all, base_all = [], [], []
    for plen in sorted(set(plens)):
        idx = [i for i, p in enumerate(plens) if p == plen]
        ids = torch.from_numpy(ids_np[idx])
        s = scores[idx].contiguous()
        want, want_nodes, want_status = ref_processor_step(
            t, ids, plen, s, alpha=alpha, temperature=temperature, renormalize=renormalize,
            eos_token_id=eos,
        )  # fmt: skip
        base_all.append(
            plain_torch_processor_step(
                t,
                want_nodes,
                s,
                alpha=alpha,
                temperature=temperature,
                renormalize=renormalize,
                eos_token_id=eos,
            )  # fmt: skip
        )
        want_all.append(torch.from_numpy(want))
        got = s.to(backend, copy=True)  # the op rewrites it in place
        nodes, status = _run_rows(native_op("processor_step", backend), dev.native_view(),
                                  ids.to(backend), plen, got, params, backend)  # fmt: skip
        _sync(backend)
        assert nodes.cpu().tolist() == want_nodes.tolist()
        assert status.cpu().tolist() == want_status.tolist()
        if backend == "cuda":  # the same nodes and statuses as the CPU op
            c = s.clone()
            cn, cs = _run_rows(CPU_STEP, trie.native_view(), ids, plen, c, params, "cpu")
            assert cn.tolist() == nodes.cpu().tolist() and cs.tolist() == status.cpu().tolist()
        got_all.append(got.cpu())
    _check_scores(torch.cat(got_all), torch.cat(want_all), torch.cat(base_all))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize(
    "params",
    [
        (0.2, 1.0, False, 2),
        (0.0, 1.0, False, -1),
        (0.5, 0.7, False, 2),
        (0.3, 1.0, True, 2),
        (0.1, 1.3, True, -1),
    ],  # fmt: skip
)
def test_processor_step_random(backend, dtype, params) -> None:
    """Random rows (some off the trie, some at a leaf) of an odd-sized vocabulary."""
    rng = np.random.default_rng(11)
    vocab = 5003  # odd: rows are not 16-byte aligned, exercises the scalar path
    paths, weights = weighted_catalog(rng, 300, vocab, alphabet=40)
    trie = build(paths, weights, vocab=vocab)
    ids, plens, scores = _inputs(rng, paths, 64, 5, vocab, dtype)
    _check(backend, trie, ids, plens, scores, params)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_processor_step_aligned_rows_and_wide_root(backend, dtype) -> None:
    """A Qwen-sized vocabulary (aligned rows) and a root with 55k children."""
    rng = np.random.default_rng(12)
    vocab = 151_936
    paths = wide_root_paths(rng, 55_000, vocab)
    trie = build(paths, vocab=vocab)
    ids, plens, scores = _inputs(rng, paths, 24, 3, vocab, dtype, off_rate=0.1)
    ids[:4, :] = 0  # some rows at the root: 55k children
    plens = [ids.shape[1] if r < 4 else p for r, p in enumerate(plens)]
    for params in [(0.2, 1.0, False, 2), (0.4, 0.8, True, 2)]:
        _check(backend, trie, ids, plens, scores, params)


def test_processor_step_nan_child_off_trie_and_strided_scores(backend) -> None:
    """A NaN child gives status 2, an off-trie row status 1; columns past vocab stay untouched."""
    paths = [[10, 11, 12, 2], [10, 11, 13, 2], [10, 14, 2], [20, 21, 2]]
    trie = build(paths, [4, 2, 1, 1])
    vocab = 40
    big = torch.randn(3, 64)
    big[2, 21] = float("nan")  # the only child of node (20,)
    ids = torch.tensor([[5, 10], [5, 9], [5, 20]], dtype=torch.int64)  # row 1 leaves the trie
    want, want_nodes, want_status = ref_processor_step(
        NumpyTrie(trie), ids, 1, big[:, :vocab], alpha=0.3
    )
    assert want_status.tolist() == [0, 1, 2]
    gpu_scores = big.clone().to(backend)
    nodes, status = _run_rows(native_op("processor_step", backend),
                              trie.to(backend).native_view(), ids.to(backend), 1,
                              gpu_scores[:, :vocab], (0.3, 1.0, False, -1), backend)  # fmt: skip
    _sync(backend)
    assert status.cpu().tolist() == [0, 1, 2]
    assert nodes.cpu().tolist() == want_nodes.tolist()
    torch.testing.assert_close(gpu_scores[:, :vocab].cpu(), torch.from_numpy(want).float(),
                               atol=1e-5, rtol=1e-5, equal_nan=True)  # fmt: skip
    torch.testing.assert_close(gpu_scores[:, vocab:].cpu(), big[:, vocab:])  # untouched padding


@pytest.mark.parametrize(
    "params",
    [(1.0, 1.0, False, 2), (1.0, 0.7, False, 2), (1.0, 1.0, True, 2), (1.0, 0.7, True, -1)],
)
def test_processor_step_zero_weight_on_minus_inf_is_not_nan(backend, params) -> None:
    """alpha = 1 gives the IG~ = 1 child weight 0: a -inf log-probability there stays -inf (not
    0 * -inf = NaN, not a kRowNan status), and renormalising children that are all -inf leaves
    them -inf; every backend and the reference agree."""
    paths = [[10, 11, 12, 2], [10, 11, 13, 2], [10, 14, 2], [20, 21, 2]]
    trie = build(paths, [4, 2, 1, 1])  # IG~: root {10: 0, 20: 1}, (10,) {11: 0, 14: 1}
    vocab = 40
    scores = torch.randn(3, vocab)
    scores[0, 20] = float("-inf")  # root, IG~ 1
    scores[1, 14] = float("-inf")  # (10,), IG~ 1
    scores[2, 21] = float("-inf")  # (20,): its only child
    ids = np.array([[9, 9], [9, 10], [9, 20]], dtype=np.int64)
    plens = [2, 1, 1]
    want, _, want_status = ref_processor_step(
        NumpyTrie(trie), torch.from_numpy(ids[1:]), 1, scores[1:], alpha=params[0],
        temperature=params[1], renormalize=params[2], eos_token_id=params[3],
    )  # fmt: skip
    assert want_status.tolist() == [0, 0] and not np.isnan(want).any()
    assert want[0, 14] == -np.inf and want[1, 21] == -np.inf and np.isfinite(want[0, 11])
    _check(backend, trie, ids, plens, scores, params)
    got = scores.clone().to(backend)
    _, status = _run_rows(native_op("processor_step", backend), trie.to(backend).native_view(),
                          torch.from_numpy(ids[:1]).to(backend), 2, got[:1], params,
                          backend)  # fmt: skip
    _sync(backend)
    row = got[0].cpu()
    assert status.cpu().tolist() == [0] and not torch.isnan(row).any()
    assert row[20] == float("-inf") and torch.isfinite(row[10])
