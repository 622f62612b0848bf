"""Beam-step helpers shared by the beam-step kernel tests: the native call with fresh outputs,
random inputs, and the comparison with the float64 reference (``cuda_testing.ref_beam_step``)."""

from __future__ import annotations

import numpy as np
import torch

from cuda_testing import (
    DTYPES,
    NO_FILTER,
    NumpyTrie,
    check_beam_step,
    native_op,
    ref_beam_step,
    sync,
)

BEAM_FIELDS = ("score", "logp", "beam", "token", "node")


def run_beam_step(op, view, logits, beam_scores, nodes, *, beams, alpha, num_candidates,
                  temperature=1.0, renormalize=False, select_slices=0,
                  candidate_bound=0):  # fmt: skip
    """Call ``op`` (``native_op("beam_step", device)``) on tensors of one device; return the
    output dict.

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
            num_candidates, *(out[f].data_ptr() for f in BEAM_FIELDS), *NO_FILTER, select_slices,
            candidate_bound]  # fmt: skip
    op(*args)
    return out


def beam_inputs(rng, t: NumpyTrie, batch, beams, vocab, dtype, *, inactive=0.2):
    """Random logits, beam scores and nodes; row 0 all padding, the last beam at a leaf."""
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


def compare_beam_step(backend, trie, logits, beam_scores, nodes, *, beams, alpha, K,
                      temperature=1.0, renormalize=False):  # fmt: skip
    """Run the beam step on ``backend`` and check it against the float64 reference (and, on CUDA,
    against the CPU op); return (outputs, reference)."""
    kw = dict(beams=beams, alpha=alpha, num_candidates=K, temperature=temperature,
              renormalize=renormalize)  # fmt: skip
    dev = trie.to(backend)
    got = run_beam_step(native_op("beam_step", backend), dev.native_view(), logits.to(backend),
                        beam_scores.to(backend), nodes.to(backend), **kw)  # fmt: skip
    sync(backend)
    ref, table = ref_beam_step(NumpyTrie(trie), logits, beam_scores, nodes, **kw)
    atol, rtol = 2e-4, 2e-5
    check_beam_step(got, ref, table, vocab=logits.shape[1], atol=atol, rtol=rtol)
    if backend == "cuda":
        c = run_beam_step(
            native_op("beam_step", "cpu"),
            trie.native_view(),
            logits.contiguous(),
            beam_scores,
            nodes,
            **kw,
        )
        check_beam_step(got, {f: c[f].double().numpy() if f in ("score", "logp")
                              else c[f].numpy().astype(np.int64) for f in BEAM_FIELDS},
                        table, vocab=logits.shape[1], atol=atol, rtol=rtol)  # fmt: skip
    return got, ref
