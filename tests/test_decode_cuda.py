"""CUDA decode kernels against the CPU kernels (which the other tests check against references).

Skipped unless igdbeam was built with its CUDA kernels and a GPU is visible.
"""

from __future__ import annotations

import random

import pytest
import torch

import igdbeam
from factories.catalogs import synthetic_catalog
from factories.ids import EOS, PAD
from factories.models import left_pad, tiny_llama
from igdbeam.decoding.generate import generate
from igdbeam.decoding.processor import IGDLogitsProcessor
from igdbeam.ops.decode_steps import beam_step, processor_step
from oracles.decode import hf_hypotheses
from oracles.trie import ReferenceTrie

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not igdbeam.cuda_available(), reason="needs a CUDA build and a GPU"),
]

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def _wide_catalog(vocab: int, seed: int) -> list[list[int]]:
    """A root with >= 20,000 children plus deeper branches (one-child chains, prefixes)."""
    rng = random.Random(seed)
    paths = [[t, EOS] for t in range(3, 20_003)]
    for _ in range(3000):
        head = rng.randrange(3, 400)
        paths.append([head] + [rng.randrange(3, vocab) for _ in range(rng.randint(1, 4))] + [EOS])
    unique = sorted({tuple(p) for p in paths})
    return [list(p) for p in unique]


def _prefixes(paths: list[list[int]], rows: int, seed: int, width: int) -> torch.Tensor:
    rng = random.Random(seed)
    out = []
    for i in range(rows):
        p = rng.choice(paths)
        # Every 9th row leaves the trie (token 1 is never a child).
        out.append([p[0], 1][:width] if i % 9 == 8 else p[: min(width, len(p))])
    # Rows share one width: short prefixes are completed with EOS (a leaf or an off-trie walk).
    return torch.tensor([g + [EOS] * (width - len(g)) for g in out], dtype=torch.int64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("alpha", "temperature", "renormalize"),
    [(0.0, 1.0, False), (0.4, 1.0, True), (0.2, 0.7, False)],
)
@pytest.mark.parametrize("width", [0, 1, 2, 3])
def test_processor_step_cuda_matches_cpu(
    dtype: torch.dtype, alpha: float, temperature: float, renormalize: bool, width: int
) -> None:
    vocab = 32_000
    paths = _wide_catalog(vocab, seed=1)
    trie = igdbeam.ItemTrie.from_token_ids(paths, [1 + i % 7 for i in range(len(paths))])
    gen = _prefixes(paths, 160, seed=2, width=width)
    ids = torch.cat([torch.full((160, 5), 7), gen], dim=1)
    scores = torch.log_softmax(torch.randn(160, vocab) * 4, -1).to(dtype)
    cpu_scores = scores.clone()
    cpu_nodes, cpu_status = processor_step(
        trie,
        ids,
        cpu_scores,
        prompt_length=5,
        alpha=alpha,
        temperature=temperature,
        renormalize=renormalize,
        eos_token_id=EOS,
    )
    gpu_trie = trie.to("cuda")
    gpu_scores = scores.cuda()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        gpu_nodes, gpu_status = processor_step(
            gpu_trie,
            ids.cuda(),
            gpu_scores,
            prompt_length=5,
            alpha=alpha,
            temperature=temperature,
            renormalize=renormalize,
            eos_token_id=EOS,
            validate=True,
        )
    stream.synchronize()
    assert torch.equal(gpu_nodes.cpu(), cpu_nodes)
    assert torch.equal(gpu_status.cpu(), cpu_status)
    tol = TOL[dtype]
    torch.testing.assert_close(gpu_scores.cpu().float(), cpu_scores.float(), rtol=tol, atol=tol)


def test_processor_step_cuda_nan_validation() -> None:
    trie = igdbeam.ItemTrie.from_token_ids([[10, EOS], [11, EOS]]).to("cuda")
    scores = torch.zeros(2, 32, device="cuda")
    scores[1, 11] = float("nan")
    ids = torch.tensor([[5], [5]], device="cuda")
    with pytest.raises(ValueError, match="NaN"):
        processor_step(trie, ids, scores.clone(), prompt_length=1, validate=True)
    _, status = processor_step(trie, ids, scores.clone(), prompt_length=1)  # no host sync
    assert status.cpu().tolist() == [0, 2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("alpha", "renormalize"), [(0.0, False), (0.5, False), (0.3, True)])
def test_beam_step_cuda_matches_cpu(dtype: torch.dtype, alpha: float, renormalize: bool) -> None:
    vocab, batch, beams = 32_000, 16, 10
    paths = _wide_catalog(vocab, seed=3)
    trie = igdbeam.ItemTrie.from_token_ids(paths, [1 + i % 5 for i in range(len(paths))])
    rng = random.Random(4)
    nodes = []
    for r in range(batch * beams):
        if r % beams == 0:
            nodes.append(0)  # the root: >= 20,000 children
        elif r % 7 == 3:
            nodes.append(-1)  # inactive
        else:
            nodes.append(rng.randrange(1, trie.num_nodes))  # inner nodes and leaves
    nodes_t = torch.tensor(nodes, dtype=torch.int32)
    logits = (torch.randn(batch * beams, vocab) * 3).to(dtype)
    beam_scores = -torch.rand(batch * beams) * 5
    kw = dict(beams=beams, num_candidates=2 * beams, alpha=alpha, renormalize=renormalize)
    cpu = beam_step(trie, logits, beam_scores, nodes_t, temperature=0.9, **kw)
    gpu = beam_step(
        trie.to("cuda"), logits.cuda(), beam_scores.cuda(), nodes_t.cuda(), temperature=0.9, **kw
    )
    torch.testing.assert_close(gpu.score.cpu(), cpu.score, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gpu.logp.cpu(), cpu.logp, rtol=1e-5, atol=1e-4)
    assert torch.equal(gpu.beam.cpu(), cpu.beam)
    assert torch.equal(gpu.token.cpu(), cpu.token)
    assert torch.equal(gpu.node.cpu(), cpu.node)


def test_generate_cuda_matches_cpu() -> None:
    model = tiny_llama(seed=12, vocab_size=512)
    paths = synthetic_catalog(60, 512, seed=13, max_len=5, heads=6, alphabet=18).paths()
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    ids, mask = left_pad([[5, 6, 7], [30, 31, 32, 33], [40]])
    cpu = generate(model, ids, mask, trie=trie, num_beams=6, alpha=0.2, length_penalty=1.0)
    gpu = generate(
        model.to("cuda"),
        ids.cuda(),
        mask.cuda(),
        trie=trie.to("cuda"),
        num_beams=6,
        alpha=0.2,
        length_penalty=1.0,
    )
    assert torch.equal(gpu.item_ids.cpu(), cpu.item_ids)
    torch.testing.assert_close(gpu.scores.cpu(), cpu.scores, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lp", [0.0, 1.0])
def test_generate_cuda_matches_processor_path_on_cuda(dtype: torch.dtype, lp: float) -> None:
    """Both CUDA kernels on one device: igdbeam.generate = model.generate + the processor."""
    model = tiny_llama(seed=14, vocab_size=512).to(device="cuda", dtype=dtype)
    paths = synthetic_catalog(60, 512, seed=15, max_len=5, heads=6, alphabet=18).paths()
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    ref = ReferenceTrie(paths)
    ids, mask = left_pad([[5, 6, 7], [30, 31, 32, 33], [40]])
    ids, mask = ids.cuda(), mask.cuda()
    gpu_trie = trie.to("cuda")
    out = model.generate(
        ids,
        attention_mask=mask,
        num_beams=6,
        num_return_sequences=6,
        length_penalty=lp,
        max_new_tokens=trie.max_depth,
        do_sample=False,
        return_dict_in_generate=True,
        output_scores=True,
        pad_token_id=PAD,
        eos_token_id=EOS,
        logits_processor=[IGDLogitsProcessor(gpu_trie, alpha=0.3, validate=True)],
    )
    theirs = hf_hypotheses(out.sequences.cpu(), out.sequences_scores.cpu(), ids.shape[1], ref, 3)
    # transformers' cache: the same attention arithmetic, so bf16 logits agree to the bit (the
    # shared-prefix cache is checked against it in test_kv_cache.py, with bf16 tolerances)
    ours = generate(model, ids, mask, trie=gpu_trie, num_beams=6, alpha=0.3, length_penalty=lp,
                    kv_cache="dynamic")  # fmt: skip
    for b in range(3):
        real = [
            (tuple(trie.item_path(int(i))), float(s))
            for i, s in zip(ours.item_ids[b].cpu(), ours.scores[b].cpu(), strict=True)
            if int(i) >= 0
        ]
        assert [p for p, _ in real] == [p for p, _ in theirs[b]]
        for (_, so), (_, st) in zip(real, theirs[b], strict=True):
            assert so == pytest.approx(st, abs=1e-5)
