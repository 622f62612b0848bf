"""Per-request item filters and CF scores against brute-force references.

The references enumerate the catalog's items with :class:`reference.ReferenceTrie` (plain dicts,
float64) and never use igdbeam's node arrays: a prefix is allowed when any item below it is, its
CF mass is the log-sum-exp of the allowed items' scores below it, and beam search with a filter
must equal beam search over the catalog restricted to the allowed items.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import igdbeam
from cuda_testing import _C, DTYPES, needs_gpu
from cuda_testing import stream as cuda_stream
from factories.catalogs import synthetic_catalog
from factories.cli import run_cli
from factories.ids import EOS
from factories.models import left_pad, tiny_llama
from generate_checks import assert_same_hypotheses, ours_hypotheses
from igdbeam.decoding.processor import IGDLogitsProcessor
from igdbeam.ops.decode_steps import beam_step, processor_step
from igdbeam.ops.node_filters import NodeFilters, node_filters
from oracles.decode import brute_force_scores, hf_hypotheses
from oracles.trie import ReferenceTrie

NEG_INF = -math.inf


# ------------------------------------------------------------------------------ references
def _lse(values: list[float]) -> float:
    finite = [v for v in values if v != NEG_INF]
    if not finite:
        return NEG_INF
    m = max(finite)
    return m + math.log(sum(math.exp(v - m) for v in finite))


def _items_below(ref: ReferenceTrie, prefix: tuple[int, ...]) -> list[int]:
    return [i for path in ref.below[prefix] for i in ref.items_of_leaf[path]]


def ref_node_arrays(ref, mask_row, score_row):
    """{prefix: (allowed, S)} for one request, by enumerating the items below each prefix."""
    out = {}
    for prefix in ref.prefixes():
        items = [i for i in _items_below(ref, prefix) if mask_row is None or mask_row[i]]
        s = _lse([float(score_row[i]) for i in items]) if score_row is not None else None
        out[prefix] = (bool(items), s)
    return out


def _node_of(trie, prefix) -> int:
    return int(trie.walk([list(prefix)])[0])


def _catalog(num_items=30, vocab=80, seed=31):
    # A duplicate title: items 3 and num_items share a leaf.
    paths = synthetic_catalog(num_items, vocab, seed=seed, duplicates=(3,)).paths()
    weights = [1 + i % 4 for i in range(len(paths))]
    return paths, weights


# ------------------------------------------------------------------------------ node arrays
@pytest.mark.parametrize(("with_mask", "with_scores"), [(True, False), (False, True), (True, True)])
def test_node_arrays_match_brute_force(with_mask: bool, with_scores: bool) -> None:
    paths, weights = _catalog()
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
    f = node_filters(trie, mask, scores, item_score_weight=0.5)
    assert f is not None and f.num_rows == rows and f.score_weight == 0.5
    for r in range(rows):
        want = ref_node_arrays(
            ref, None if mask is None else mask[r], None if scores is None else scores[r]
        )
        for prefix, (allowed, s) in want.items():
            node = _node_of(trie, prefix)
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
    paths, weights = _catalog(60, seed=3)
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
    paths, weights = _catalog(40, seed=8)
    trie = igdbeam.ItemTrie.from_token_ids(paths, weights)
    ref = ReferenceTrie(paths, weights)
    g = torch.Generator().manual_seed(9)
    scores = torch.randn(2, len(paths), generator=g) * 3
    mask = torch.rand(2, len(paths), generator=g) < 0.7
    f = node_filters(trie, mask, scores)
    S = f.node_scores.double()
    for r in range(2):
        allowed = [i for i in range(len(paths)) if mask[r, i]]
        log_z = _lse([float(scores[r, i]) for i in allowed])
        for i in allowed:
            path = tuple(paths[i])
            nodes = [_node_of(trie, path[:d]) for d in range(len(path) + 1)]
            total = sum(float(S[r, c] - S[r, p]) for p, c in zip(nodes, nodes[1:], strict=False))
            leaf_items = ref.items_of_leaf[path]
            want = _lse([float(scores[r, j]) for j in leaf_items if mask[r, j]]) - log_z
            assert total == pytest.approx(want, abs=1e-4)
            if len(leaf_items) == 1:  # one item owns the path: its CF log-probability
                assert total == pytest.approx(float(scores[r, i]) - log_z, abs=1e-4)


def test_exclude_items_and_bad_inputs() -> None:
    paths, _ = _catalog(10)
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


# --------------------------------------------------------------------------- the decode steps
def _ref_beam_step(
    trie, ref, logits, beam_scores, nodes, beams, C, alpha, renorm, arrays, frows, weight
):
    """Every allowed child of every active beam, float64, sorted by (-score, beam, token)."""
    prefix_of = {_node_of(trie, p): p for p in ref.prefixes()}
    out = []
    for b in range(logits.shape[0] // beams):
        node_arr = arrays[frows[b]]
        cands = []
        for k in range(beams):
            r = b * beams + k
            node = int(nodes[r])
            if node < 0 or trie.is_leaf(node):
                continue
            prefix = prefix_of[node]
            row = torch.log_softmax(logits[r].double(), dim=-1)
            kids = [t for t in ref.children[prefix] if node_arr[prefix + (t,)][0]]
            lp = {t: float(row[t]) for t in kids}
            if renorm and kids:
                z = float(torch.logsumexp(row[kids], dim=0))
                lp = {t: v - z for t, v in lp.items()}
            for t in kids:
                step = (1.0 - alpha * ref.normalized_info_gain(prefix, t)) * lp[t]
                s_child, s_node = node_arr[prefix + (t,)][1], node_arr[prefix][1]
                if s_child is not None:
                    step = NEG_INF if s_child == NEG_INF else step + weight * (s_child - s_node)
                cands.append(
                    (float(beam_scores[r]) + step, lp[t], k, t, _node_of(trie, prefix + (t,)))
                )
        cands.sort(key=lambda c: (-c[0], c[2], c[3]))
        out.append(cands[:C] + [(NEG_INF, NEG_INF, -1, -1, -1)] * max(0, C - len(cands)))
    return out


def _step_inputs(trie, paths, batch, beams, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch * beams, vocab, generator=g) * 3
    scores = -torch.rand(batch * beams, generator=g) * 4
    nodes = []
    for r in range(batch * beams):
        p = paths[(r * 7) % len(paths)]
        nodes.append(_node_of(trie, p[: (r % 3)]) if r % 5 != 4 else -1)
    return logits, scores, torch.tensor(nodes, dtype=torch.int32)


@pytest.mark.parametrize(
    ("alpha", "renormalize", "weight"), [(0.0, False, 0.0), (0.4, False, 0.7), (0.3, True, 1.5)]
)
def test_beam_step_with_filters_matches_reference(alpha, renormalize, weight) -> None:
    paths, weights = _catalog(40, seed=12)
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
    want = _ref_beam_step(
        trie, ref, logits, beam_scores, nodes, beams, C, alpha, renormalize, arrays, frows, weight
    )
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
    paths, weights = _catalog(30, seed=15)
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
                z = _lse(list(lp.values()))
                lp = {t: v - z for t, v in lp.items()}
            for t in kids:
                s_child = node_arr[prefix + (t,)][1]
                step = (1.0 - alpha * ref.normalized_info_gain(prefix, t)) * lp[t]
                step += weight * (s_child - node_arr[prefix][1])
                want[t] = NEG_INF if s_child == NEG_INF else step
            torch.testing.assert_close(scores[j].double(), want, atol=1e-4, rtol=1e-5)


# ----------------------------------------------------------------------------------- generate
def _hyps_by_path(result, trie):
    return ours_hypotheses(result, trie)


@pytest.mark.parametrize("lp", [0.0, 1.0])
@pytest.mark.parametrize("renormalize", [False, True])
def test_generate_with_mask_equals_search_on_the_restricted_catalog(lp, renormalize) -> None:
    """alpha = 0: a filtered search is exactly the search over a trie of the allowed items only
    (IG~ plays no part), prompt by prompt, with K below the number of allowed items."""
    model = tiny_llama(seed=21)
    paths = synthetic_catalog(24, 96, seed=41).paths()
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    prompts = [[5, 6, 7], [30, 31, 32, 33], [40], [9, 9]]
    g = torch.Generator().manual_seed(22)
    mask = torch.rand(len(prompts), len(paths), generator=g) < 0.6
    mask[2] = False
    ids, attn = left_pad(prompts)
    K = 4
    got = igdbeam.generate(
        model,
        ids,
        attn,
        trie=trie,
        num_beams=K,
        length_penalty=lp,
        renormalize=renormalize,
        item_mask=mask,
    )
    ours = _hyps_by_path(got, trie)
    assert got.item_ids[2].tolist() == [-1] * K  # nothing allowed
    for b, prompt in enumerate(prompts):
        allowed = [paths[i] for i in range(len(paths)) if mask[b, i]]
        if not allowed:
            continue
        sub = igdbeam.ItemTrie.from_token_ids(allowed)
        one = igdbeam.generate(
            model,
            torch.tensor([prompt]),
            trie=sub,
            num_beams=K,
            length_penalty=lp,
            renormalize=renormalize,
        )
        assert_same_hypotheses([ours[b]], _hyps_by_path(one, sub), atol=1e-4)
        for item in got.item_ids[b].tolist():
            assert item < 0 or bool(mask[b, item])


@pytest.mark.parametrize("lp", [0.0, 1.0])
@pytest.mark.parametrize(("alpha", "weight"), [(0.3, 0.0), (0.3, 0.5), (0.0, 2.0)])
def test_generate_large_beam_matches_brute_force_with_filters(lp, alpha, weight) -> None:
    """K >= #items: every allowed item comes back (no excluded one), ranked by
    (IG-weighted LM path score + weight * log p_cf(item | allowed)) / len ** lp."""
    model = tiny_llama(seed=23)
    paths = synthetic_catalog(12, 96, seed=43).paths() + [[5, EOS], [5, 6, EOS]]
    weights = [1 + i % 3 for i in range(len(paths))]
    trie = igdbeam.ItemTrie.from_token_ids(paths, weights)
    ref = ReferenceTrie(paths, weights)
    prompts = [[5, 6, 7], [30, 31, 32, 33, 34]]
    excluded = [[0, 3, 12], [1, 13]]
    mask = igdbeam.exclude_items(trie, excluded)
    g = torch.Generator().manual_seed(24)
    cf = torch.randn(len(prompts), len(paths), generator=g) * 2
    ids, attn = left_pad(prompts)
    K = len(paths) + 1
    result = igdbeam.generate(
        model,
        ids,
        attn,
        trie=trie,
        num_beams=K,
        alpha=alpha,
        length_penalty=lp,
        early_stopping="never",
        item_mask=mask,
        item_scores=cf,
        item_score_weight=weight,
    )
    ours = _hyps_by_path(result, trie)
    for b, prompt in enumerate(prompts):
        lm = brute_force_scores(model, prompt, ref, alpha, 0.0)
        allowed = [i for i in range(len(paths)) if i not in excluded[b]]
        log_z = _lse([float(cf[b, i]) for i in allowed])
        expected = {
            tuple(paths[i]): (lm[tuple(paths[i])] + weight * (float(cf[b, i]) - log_z))
            / len(paths[i]) ** lp
            for i in allowed
        }
        expected = sorted(expected.items(), key=lambda kv: -kv[1])
        assert [p for p, _ in ours[b]] == [p for p, _ in expected]
        for (_, so), (_, se) in zip(ours[b], expected, strict=True):
            assert so == pytest.approx(se, abs=2e-4)
        got_items = [i for i in result.item_ids[b].tolist() if i >= 0]
        assert not set(got_items) & set(excluded[b])


def test_generate_many_and_processor_path_agree_with_filters() -> None:
    """generate_many == one generate per decoding; the IGDLogitsProcessor inside
    model.generate finds the same hypotheses with the same filters."""
    model = tiny_llama(seed=25)
    paths = synthetic_catalog(20, 96, seed=45).paths()
    trie = igdbeam.ItemTrie.from_token_ids(paths)
    ref = ReferenceTrie(paths)
    ids, attn = left_pad([[5, 6, 7], [9, 10], [40, 41, 42]])
    mask = igdbeam.exclude_items(trie, [[0, 1, 2], [], [5, 6]])
    cf = torch.log(torch.arange(1, len(paths) + 1, dtype=torch.float32))  # a popularity prior
    kw = {"item_mask": mask, "item_scores": cf, "item_score_weight": 0.7}
    decodings = [igdbeam.Decoding(alpha=0.0, length_penalty=1.0), igdbeam.Decoding(alpha=0.2)]
    many = igdbeam.generate_many(
        model, ids, attn, trie=trie, num_beams=3, decodings=decodings, **kw
    )
    for d, out in zip(decodings, many, strict=True):
        one = igdbeam.generate(
            model,
            ids,
            attn,
            trie=trie,
            num_beams=3,
            alpha=d.alpha,
            length_penalty=d.length_penalty,
            **kw,
        )
        assert torch.equal(out.item_ids, one.item_ids)
        torch.testing.assert_close(out.scores, one.scores, rtol=0, atol=1e-6)
    out = model.generate(
        ids,
        attention_mask=attn,
        num_beams=3,
        num_return_sequences=3,
        length_penalty=0.0,
        max_new_tokens=trie.max_depth,
        do_sample=False,
        return_dict_in_generate=True,
        output_scores=True,
        pad_token_id=0,
        eos_token_id=EOS,
        logits_processor=[IGDLogitsProcessor(trie, alpha=0.2, **kw)],
    )
    theirs = hf_hypotheses(out.sequences, out.sequences_scores, ids.shape[1], ref, ids.shape[0])
    assert_same_hypotheses(_hyps_by_path(many[1], trie), theirs, atol=1e-4)


def test_generate_filter_input_errors() -> None:
    model = tiny_llama(seed=26)
    trie = igdbeam.ItemTrie.from_token_ids(synthetic_catalog(10, 96, seed=46).paths())
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    with pytest.raises(ValueError, match="rows"):
        igdbeam.generate(
            model,
            ids,
            trie=trie,
            num_beams=2,
            item_mask=torch.ones(3, trie.num_items, dtype=torch.bool),
        )
    with pytest.raises(ValueError, match="finite"):
        igdbeam.generate(
            model, ids, trie=trie, num_beams=2, item_scores=torch.full((trie.num_items,), math.inf)
        )


# ----------------------------------------------------------------------- CUDA (and emulation)
def _filter_ptrs(f, rows):
    return (
        f.mask_words.data_ptr() if f.mask_words is not None else 0,
        f.node_scores.data_ptr() if f.node_scores is not None else 0,
        float(f.score_weight),
        rows.data_ptr(),
        int(f.node_scores.shape[1] if f.node_scores is not None else f.mask_words.shape[1]),
    )


def _to_cuda(f: NodeFilters) -> NodeFilters:
    return NodeFilters(f.mask_words.cuda(), f.node_scores.cuda(), f.score_weight, f.num_rows)


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("broadcast_scores", [False, True])
def test_cuda_node_filters_match_cpu(broadcast_scores: bool) -> None:
    paths, weights = _catalog(60, seed=17)
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


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("renormalize", [False, True])
@pytest.mark.parametrize("select_slices", [0, 3])
def test_cuda_filtered_beam_step_matches_cpu(renormalize: bool, select_slices: int) -> None:
    paths, weights = _catalog(40, seed=19)
    cpu = igdbeam.ItemTrie.from_token_ids(paths, weights)
    gpu = cpu.to("cuda")
    g = torch.Generator().manual_seed(20)
    vocab, batch, beams, C = 80, 3, 4, 7
    mask = torch.rand(4, len(paths), generator=g) < 0.6
    f = node_filters(cpu, mask, torch.randn(4, len(paths), generator=g), item_score_weight=0.9)
    fg = _to_cuda(f)
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
        *_filter_ptrs(fg, fr),
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
    paths, weights = _catalog(30, seed=27)
    cpu = igdbeam.ItemTrie.from_token_ids(paths, weights)
    gpu = cpu.to("cuda")
    g = torch.Generator().manual_seed(28)
    vocab = 80
    mask = torch.rand(2, len(paths), generator=g) < 0.5
    f = node_filters(cpu, mask, torch.randn(2, len(paths), generator=g), item_score_weight=1.3)
    fg = _to_cuda(f)
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
        *_filter_ptrs(fg, fr),
        1,  # device: CUDA
        cuda_stream(),
    )
    assert status is None
    torch.cuda.synchronize()
    torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-5)


# ------------------------------------------------------------------------------------ the CLI
def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit status and stderr of ``igdbeam <argv>`` (the tiny assets come from conftest)."""
    code, _, err = run_cli(argv, capsys)
    return code, err


def test_cli_recommend_exclude_history(tiny_assets, tmp_path, capsys) -> None:
    """With 10 beams over a 10-item catalog every allowed item comes back, no history item."""
    import csv

    from igdbeam.data import load_dataset

    data, model = tiny_assets
    out = tmp_path / "recs.csv"
    argv = [
        "recommend",
        "--data",
        str(data),
        "--model",
        str(model),
        "--method",
        "d3",
        "--num-beams",
        "10",
        "--no-progress",
        "--out",
        str(out),
        "--exclude-history",
    ]
    code, err = _cli(argv, capsys)
    assert code == 0, err
    ds = load_dataset(data, splits=("test",))
    history = {s.user_id: set(s.history_item_id) for s in ds.split("test")}
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    per_user: dict[str, list[int]] = {}
    for r in rows:
        per_user.setdefault(r["user_id"], []).append(int(r["item_id"]))
    assert set(per_user) == set(history)
    for user, items in per_user.items():
        assert not set(items) & history[user]
        assert len(items) == len(set(items)) == 10 - len(history[user])


def test_cli_evaluate_with_cf_scores(tiny_assets, tmp_path, capsys) -> None:
    from igdbeam.data import load_dataset

    data, model = tiny_assets
    base = [
        "evaluate",
        "--data",
        str(data),
        "--model",
        str(model),
        "--methods",
        "d3,igd",
        "--num-beams",
        "3",
        "--no-progress",
    ]
    code, err = _cli(base + ["--out", str(tmp_path / "pop"), "--popularity-prior", "1.0"], capsys)
    assert code == 0, err
    assert (tmp_path / "pop" / "metrics.json").is_file()
    ds = load_dataset(data, splits=("test",))
    scores = np.random.default_rng(0).normal(size=(len(ds.split("test")), len(ds.catalog)))
    np.save(tmp_path / "cf.npy", scores.astype(np.float32))
    code, err = _cli(
        base
        + [
            "--out",
            str(tmp_path / "cf"),
            "--item-scores",
            str(tmp_path / "cf.npy"),
            "--exclude-history",
        ],
        capsys,
    )
    assert code == 0, err
    np.save(tmp_path / "bad.npy", scores[:, :3])
    code, err = _cli(
        base + ["--out", str(tmp_path / "bad"), "--item-scores", str(tmp_path / "bad.npy")], capsys
    )
    assert code == 2 and "--item-scores" in err
    code, err = _cli(
        base
        + ["--out", str(tmp_path / "both"), "--item-scores", "x.npy", "--popularity-prior", "1"],
        capsys,
    )
    assert code == 2 and "not allowed with" in err
