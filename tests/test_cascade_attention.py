"""Cascade attention (the shared-prefix cache's attention) against one float64 softmax over the
concatenated keys: prompt keys once per prompt, each beam's own suffix keys."""

from __future__ import annotations

import pytest
import torch

from igdbeam.decoding.kv_cache import cascade_attention


def _reference_attention(query, prefix_k, prefix_v, prompt_mask, suffix_k, suffix_v, scale):
    """Row by row, head by head: softmax over [prompt tokens, own suffix] in float64."""
    N, H, _, D = query.shape
    P, Hkv, L, _ = prefix_k.shape
    W, G = N // P, H // Hkv
    out = torch.empty(N, 1, H, D, dtype=torch.float64)
    for r in range(N):
        p = r // W
        keep = prompt_mask[p].bool()
        for h in range(H):
            kv = h // G
            keys = torch.cat((prefix_k[p, kv][keep], suffix_k[r, kv])).double()
            vals = torch.cat((prefix_v[p, kv][keep], suffix_v[r, kv])).double()
            w = torch.softmax(keys @ query[r, h, 0].double() * scale, dim=0)
            out[r, 0, h] = w @ vals
    return out


@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (6, 2), (9, 3)])
@pytest.mark.parametrize("padded", [False, True])
def test_cascade_attention_equals_one_softmax(heads: int, kv_heads: int, padded: bool) -> None:
    g = torch.Generator().manual_seed(heads * 10 + kv_heads)
    P, W, L, S, D = 3, 4, 7, 3, 8
    query = torch.randn(P * W, heads, 1, D, generator=g)
    prefix_k, prefix_v = (torch.randn(P, kv_heads, L, D, generator=g) for _ in range(2))
    suffix_k, suffix_v = (torch.randn(P * W, kv_heads, S, D, generator=g) for _ in range(2))
    mask = torch.ones(P, L, dtype=torch.long)
    if padded:
        mask[0, :3] = 0
        mask[2, :6] = 0  # one prompt token left
    bias = torch.zeros(P, 1, 1, L).masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    got = cascade_attention(query, prefix_k, prefix_v, bias, suffix_k, suffix_v, D**-0.5)
    want = _reference_attention(query, prefix_k, prefix_v, mask, suffix_k, suffix_v, D**-0.5)
    assert got.shape == (P * W, 1, heads, D) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5)


def test_cascade_attention_rejects_bad_shapes() -> None:
    q = torch.zeros(5, 4, 1, 8)
    k = torch.zeros(2, 2, 3, 8)
    with pytest.raises(ValueError, match="rows = prompts x beams"):
        cascade_attention(q, k, k, None, torch.zeros(5, 2, 1, 8), torch.zeros(5, 2, 1, 8), 1.0)


@pytest.mark.cuda
def test_cuda_cascade_attention_equals_one_softmax() -> None:
    g = torch.Generator().manual_seed(1)
    P, W, H, Hkv, L, S, D = 4, 10, 9, 3, 33, 5, 64
    query = torch.randn(P * W, H, 1, D, generator=g)
    prefix_k, prefix_v = (torch.randn(P, Hkv, L, D, generator=g) for _ in range(2))
    suffix_k, suffix_v = (torch.randn(P * W, Hkv, S, D, generator=g) for _ in range(2))
    mask = torch.ones(P, L, dtype=torch.long)
    mask[1, :20] = 0
    bias = torch.zeros(P, 1, 1, L).masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    args = [t.to("cuda") for t in (query, prefix_k, prefix_v, bias, suffix_k, suffix_v)]
    got = cascade_attention(*args, D**-0.5)
    want = _reference_attention(query, prefix_k, prefix_v, mask, suffix_k, suffix_v, D**-0.5)
    # TF32 matmuls may be on: 1e-3 covers them.
    torch.testing.assert_close(got.double().cpu(), want, rtol=0, atol=1e-3)
