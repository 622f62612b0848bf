"""Shared helpers of the CUDA tests: skip markers, random catalogs and float64 numpy references.

The references here read only the trie's CSR arrays (``child_offsets``, ``token``,
``info_gain_norm``, ``info_gain``, ``zero_ig``) and follow ``csrc/include/igdbeam/kernels.h``
literally in float64; they share no code with the kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import igdbeam
from factories.catalogs import synthetic_catalog
from igdbeam.native import library as _native
from igdbeam.native.dispatch import DEVICE_CPU, DEVICE_CUDA, raise_for_status

_C = _native._C

DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}

needs_gpu = pytest.mark.skipif(
    not igdbeam.cuda_available(), reason="needs a CUDA GPU and a CUDA build of igdbeam"
)
cuda_marks = [pytest.mark.cuda, needs_gpu]


def cuda_only(test):
    """Mark one test as CUDA-only (the ``cuda`` marker and the GPU skip)."""
    for mark in cuda_marks:
        test = mark(test)
    return test


# The filter arguments of an unfiltered decode step (node_mask, node_score, score_weight,
# filter_rows, filter_row_stride).
NO_FILTER = (0, 0, 0.0, 0, 0)


def stream() -> int:
    """The current CUDA stream handle as an int."""
    return int(torch.cuda.current_stream().cuda_stream)


def native_op(name: str, device: str):
    """``_C.<name>`` on one backend, called directly (no ``run_op``, so the emulated CUDA build
    of tools/cuda_emu_check.sh runs its CUDA kernels on CPU tensors): appends the device code and
    the stream, and raises the typed error of a failed status."""
    op = getattr(_C, name)

    def call(*args):
        if device == "cuda":
            raise_for_status(name, op(*args, DEVICE_CUDA, stream()))
        else:
            raise_for_status(name, op(*args, DEVICE_CPU, 0))

    return call


def assert_within_reference_error(
    got: torch.Tensor,
    baseline: torch.Tensor,
    oracle: torch.Tensor,
    factor: float = 2.0,
    statistic: str = "max",
) -> None:
    """The low-precision rule: ``got``'s error against the higher-precision ``oracle`` is at most
    ``factor`` times that of ``baseline``, plain PyTorch computing the same thing in the same
    precision (plus a float64 rounding floor, so an exact baseline does not demand exactness).
    Where the oracle is not finite (-inf for a banned token, NaN) ``got`` must equal it exactly;
    the errors are measured over the finite entries, by their largest absolute value
    (``statistic="max"``, flash-attention's choice for large tensors) or their root mean square
    (``"rms"``, steadier for a handful of values such as one beam search's scores)."""
    oracle = oracle.detach().cpu().double()
    got = got.detach().cpu().double()
    finite = torch.isfinite(oracle)
    torch.testing.assert_close(got[~finite], oracle[~finite], equal_nan=True, atol=0, rtol=0)
    if not bool(finite.any()):
        return

    def error(x: torch.Tensor) -> float:
        diff = x[finite] - oracle[finite]
        return float(diff.abs().max() if statistic == "max" else diff.pow(2).mean().sqrt())

    err, base = error(got), error(baseline.detach().cpu().double())
    floor = 1e-12 * max(1.0, oracle[finite].abs().max().item())
    assert err <= factor * base + floor, (
        f"{statistic} error {err:.3g} > {factor} x baseline {statistic} error {base:.3g}"
    )


def sync(backend: str) -> None:
    """Wait for the CUDA stream (no-op on the CPU)."""
    if backend == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------- catalogs
def weighted_catalog(
    rng: np.random.Generator, num_items: int, vocab: int, **kwargs
) -> tuple[list[list[int]], np.ndarray]:
    """Paths of ``factories.catalogs.synthetic_catalog`` (depth up to 6, item 0 duplicated, the
    seed drawn from ``rng``; ``kwargs`` go to the generator) and popularity-like weights."""
    kwargs = {"max_len": 6, "duplicates": (0,), **kwargs}
    cat = synthetic_catalog(num_items, vocab, seed=int(rng.integers(2**31)), **kwargs)
    return cat.paths(), rng.integers(1, 20, size=cat.num_items).astype(np.float64)


def wide_root_paths(rng: np.random.Generator, num_children: int, vocab: int) -> list[list[int]]:
    """A catalog whose root has ``num_children`` children, 4,000 more paths continuing below."""
    return synthetic_catalog(
        num_children + 4_000,
        vocab,
        seed=int(rng.integers(2**31)),
        heads=num_children,
        alphabet=None,
        max_len=3,
        wide_root=True,
    ).paths()


def build(paths, weights=None, vocab=None) -> igdbeam.ItemTrie:
    """The trie on the CPU (move with ``.to('cuda')``)."""
    return igdbeam.ItemTrie.from_token_ids(paths, weights, vocab_size=vocab)


class NumpyTrie:
    """The CSR arrays of a trie as numpy arrays, with the child lookups the references need."""

    def __init__(self, trie: igdbeam.ItemTrie) -> None:
        a = trie.cpu()
        self.offsets = a.child_offsets.numpy().astype(np.int64)
        self.token = a.token.numpy().astype(np.int64)
        self.ign = a.info_gain_norm.numpy().astype(np.float64)
        self.ig = a.info_gain.numpy()
        self.zero = a.zero_ig.numpy()
        self.num_nodes = self.token.shape[0]

    def children(self, node: int) -> tuple[int, int]:
        """[lo, hi) of the children of ``node``; empty for an invalid node."""
        if node < 0 or node >= self.num_nodes:
            return 0, 0
        return int(self.offsets[node]), int(self.offsets[node + 1])

    def child(self, node: int, tok: int) -> int:
        lo, hi = self.children(node)
        k = lo + int(np.searchsorted(self.token[lo:hi], tok))
        return k if k < hi and self.token[k] == tok else -1

    def walk(self, tokens) -> int:
        node = 0
        for t in tokens:
            node = self.child(node, int(t))
            if node < 0:
                return -1
        return node

    def random_nodes(self, rng: np.random.Generator, n: int, *, inner: bool = True) -> np.ndarray:
        """Random node ids; inner=True picks nodes with children."""
        ids = np.arange(self.num_nodes)
        if inner:
            ids = ids[self.offsets[1:] > self.offsets[:-1]]
        return rng.choice(ids, size=n)


def logsumexp(x: np.ndarray) -> float:
    """The float64 log-sum-exp of ``x`` (-inf when empty)."""
    if x.size == 0:
        return -np.inf
    m = np.max(x)
    if not np.isfinite(m):
        return float(m)
    return float(m + np.log(np.sum(np.exp(x - m))))


def _child_norm(lp: np.ndarray) -> float:
    """The children's logsumexp for renormalising; 0 when infinite (every child -inf)."""
    z = logsumexp(lp)
    return 0.0 if np.isinf(z) else z


def _weighted(w: np.ndarray, lp: np.ndarray) -> np.ndarray:
    """w * lp with -inf kept -inf where w == 0 (an impossible token stays impossible)."""
    out = np.full(lp.shape, -np.inf)
    keep = lp != -np.inf
    out[keep] = w[keep] * lp[keep]
    return out


# ---------------------------------------------------------------------------------- references
class CandidateTable:
    """Every candidate of one batch row: (beam * vocab + token) -> (score, logp), by search."""

    def __init__(self, ids: np.ndarray, score: np.ndarray, logp: np.ndarray) -> None:
        order = np.argsort(ids, kind="stable")
        self.ids, self.score, self.logp = ids[order], score[order], logp[order]

    def get(self, beam: int, token: int, vocab: int) -> tuple[float, float] | None:
        key = beam * vocab + token
        k = int(np.searchsorted(self.ids, key))
        if k < self.ids.shape[0] and self.ids[k] == key:
            return float(self.score[k]), float(self.logp[k])
        return None


def ref_beam_step(
    t: NumpyTrie,
    logits: torch.Tensor,
    beam_scores: torch.Tensor,
    nodes: torch.Tensor,
    *,
    beams: int,
    alpha: float,
    num_candidates: int,
    temperature: float = 1.0,
    renormalize: bool = False,
):
    """float64 reference of kernels.h BeamStep: (outputs dict, a CandidateTable per row)."""
    x_all = logits.detach().float().cpu().numpy().astype(np.float64)
    bs = beam_scores.detach().cpu().numpy().astype(np.float64)
    nd = nodes.detach().cpu().numpy()
    rows, vocab = x_all.shape
    batch = rows // beams
    out = {
        "score": np.full((batch, num_candidates), -np.inf),
        "logp": np.full((batch, num_candidates), -np.inf),
        "beam": np.full((batch, num_candidates), -1, dtype=np.int64),
        "token": np.full((batch, num_candidates), -1, dtype=np.int64),
        "node": np.full((batch, num_candidates), -1, dtype=np.int64),
    }
    every: list[CandidateTable] = []
    for b in range(batch):
        cand_s, cand_lp, cand_k, cand_tok, cand_node = [], [], [], [], []
        for k in range(beams):
            r = b * beams + k
            lo, hi = t.children(int(nd[r]))
            if hi <= lo:
                continue
            toks = t.token[lo:hi]
            keep = toks < vocab
            toks, kids = toks[keep], np.arange(lo, hi)[keep]
            x = x_all[r] / temperature
            sel = x[toks]
            lp = sel - (_child_norm(sel) if renormalize else logsumexp(x))
            w = 1.0 - alpha * t.ign[kids]
            cand_s.append(bs[r] + _weighted(w, lp))
            cand_lp.append(lp)
            cand_k.append(np.full(toks.shape, k))
            cand_tok.append(toks)
            cand_node.append(kids)
        table = CandidateTable(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
        if cand_s:
            s = np.concatenate(cand_s)
            lp = np.concatenate(cand_lp)
            kk = np.concatenate(cand_k)
            tt = np.concatenate(cand_tok)
            nn = np.concatenate(cand_node)
            order = np.lexsort((tt, kk, -s))[:num_candidates]
            n = order.shape[0]
            out["score"][b, :n] = s[order]
            out["logp"][b, :n] = lp[order]
            out["beam"][b, :n] = kk[order]
            out["token"][b, :n] = tt[order]
            out["node"][b, :n] = nn[order]
            table = CandidateTable(kk * vocab + tt, s, lp)
        every.append(table)
    return out, every


def check_beam_step(
    got: dict, ref: dict, table: list, *, vocab: int, atol: float, rtol: float
) -> None:
    """Check a beam step's outputs against the reference, tolerating reordered near-ties.

    * the sorted scores match the reference's within tolerance, padding included;
    * every returned (beam, token) is a real candidate whose reference score and logp match, its
      node is the reference's, and scores never increase along a row;
    * where the reference's score is clear of its neighbours, the identity is exactly the same.
    """
    g = {k: v.detach().cpu().numpy() for k, v in got.items()}
    torch.testing.assert_close(
        torch.from_numpy(g["score"]).double(), torch.from_numpy(ref["score"]), atol=atol, rtol=rtol
    )
    batch, K = ref["score"].shape
    for b in range(batch):
        s = g["score"][b]
        finite = s[np.isfinite(s)]
        assert np.all(np.diff(finite) <= 0), f"row {b}: scores not sorted: {s}"
        for j in range(K):
            beam, tok = int(g["beam"][b, j]), int(g["token"][b, j])
            if ref["beam"][b, j] < 0:
                assert beam == -1 and tok == -1 and g["node"][b, j] == -1, (b, j)
                continue
            hit = table[b].get(beam, tok, vocab)
            assert hit is not None, f"row {b} slot {j}: ({beam}, {tok}) is no candidate"
            ref_s, ref_lp = hit
            assert abs(ref_s - s[j]) <= atol + rtol * abs(ref_s), (b, j, ref_s, s[j])
            assert abs(ref_lp - g["logp"][b, j]) <= atol + rtol * abs(ref_lp), (b, j)
            rs = ref["score"][b]
            lo_gap = rs[j - 1] - rs[j] if j > 0 else np.inf
            hi_gap = rs[j] - rs[j + 1] if j + 1 < K and np.isfinite(rs[j + 1]) else np.inf
            tol = 4 * (atol + rtol * abs(rs[j]))
            if lo_gap > tol and hi_gap > tol:
                assert (beam, tok) == (int(ref["beam"][b, j]), int(ref["token"][b, j])), (b, j)
                assert int(g["node"][b, j]) == int(ref["node"][b, j])


def ref_processor_step(
    t: NumpyTrie,
    input_ids: torch.Tensor,
    prompt_len: int,
    scores: torch.Tensor,
    *,
    alpha: float,
    temperature: float = 1.0,
    renormalize: bool = False,
    eos_token_id: int = -1,
):
    """float64 reference of kernels.h ProcessorStep: (new scores, nodes, row_status)."""
    ids = input_ids.cpu().numpy()
    x_all = scores.detach().float().cpu().numpy().astype(np.float64)
    rows, vocab = x_all.shape
    out = np.full((rows, vocab), -np.inf)
    nodes = np.zeros(rows, dtype=np.int64)
    status = np.zeros(rows, dtype=np.int64)
    for r in range(rows):
        node = t.walk(ids[r, prompt_len:])
        nodes[r] = node
        if node < 0:
            status[r] = 1
            continue
        lo, hi = t.children(node)
        if hi == lo:
            if eos_token_id >= 0:
                out[r, eos_token_id] = 0.0
            continue
        toks = t.token[lo:hi]
        kids = np.arange(lo, hi)[toks < vocab]
        toks = toks[toks < vocab]
        x = x_all[r]
        if temperature != 1.0:
            x = x / temperature
            if not renormalize:  # renormalising over the children cancels the full-row norm
                x = x - logsumexp(x)
        lp = x[toks]
        if renormalize:
            lp = lp - _child_norm(lp)
        y = _weighted(1.0 - alpha * t.ign[kids], lp)
        out[r, toks] = y
        if np.isnan(y).any():
            status[r] = 2
    return out, nodes, status


def plain_torch_processor_step(
    t: NumpyTrie,
    nodes: np.ndarray,
    scores: torch.Tensor,
    *,
    alpha: float,
    temperature: float = 1.0,
    renormalize: bool = False,
    eos_token_id: int = -1,
) -> torch.Tensor:
    """ProcessorStep as a user would write it in PyTorch, every operation in the scores' own dtype
    (no float32 upcast): the baseline of the low-precision rule. ``nodes`` are the rows' nodes
    (from :func:`ref_processor_step`; < 0 off the trie)."""
    x_all = scores.detach().cpu()
    if temperature != 1.0:
        x_all = x_all / temperature
        if not renormalize:
            x_all = x_all - torch.logsumexp(x_all, -1, keepdim=True)
    vocab = x_all.shape[1]
    out = torch.full_like(x_all, float("-inf"))
    for r, node in enumerate(nodes.tolist()):
        lo, hi = t.children(node)
        if node < 0 or hi == lo:
            if node >= 0 and eos_token_id >= 0:
                out[r, eos_token_id] = 0.0
            continue
        toks = t.token[lo:hi]
        kids = np.arange(lo, hi)[toks < vocab]
        toks = torch.from_numpy(toks[toks < vocab])
        lp = x_all[r, toks]
        if renormalize:
            lse = torch.logsumexp(lp, 0)
            lp = lp - lse if bool(torch.isfinite(lse)) else lp
        w = torch.from_numpy(1.0 - alpha * t.ign[kids]).to(lp.dtype)
        out[r, toks] = torch.where(lp == float("-inf"), lp, w * lp)
    return out


def ref_label_weights(t: NumpyTrie, labels: torch.Tensor, ignore_index: int, beta: float, policy):
    """Reference of kernels.h LabelWeights: (info_gain, zero_ig, weight, row_status)."""
    lab = labels.cpu().numpy()
    rows, cols = lab.shape
    ig = np.zeros((rows, cols), dtype=np.float32)
    zero = np.zeros((rows, cols), dtype=np.uint8)
    w = np.zeros((rows, cols), dtype=np.float32)
    status = np.zeros(rows, dtype=np.int32)
    for r in range(rows):
        node = 0
        for p in range(cols):
            if lab[r, p] == ignore_index:
                continue
            node = t.child(node, int(lab[r, p]))
            if node < 0:
                status[r] = 1
                break
            ig[r, p] = t.ig[node]
            zero[r, p] = t.zero[node]
            w[r, p] = beta if t.zero[node] else 1.0
        if status[r]:  # IG and zero-IG flags cleared, the policy's weight on the completion
            comp = lab[r] != ignore_index
            ig[r] = 0.0
            zero[r] = 0
            w[r, comp] = beta if policy == 1 else 0.0
    return ig, zero, w, status
