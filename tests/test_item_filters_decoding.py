"""Per-request item filters and CF scores against brute-force references.

The references enumerate the catalog's items with :class:`oracles.trie.ReferenceTrie` (plain dicts,
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
from factories.catalogs import synthetic_catalog
from factories.cli import run_cli
from factories.ids import EOS
from factories.models import left_pad, tiny_llama
from filter_testing import lse
from generate_checks import assert_same_hypotheses, ours_hypotheses
from igdbeam.decoding.processor import IGDLogitsProcessor
from oracles.decode import brute_force_scores, hf_hypotheses
from oracles.trie import ReferenceTrie


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
        log_z = lse([float(cf[b, i]) for i in allowed])
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
    """generate rejects malformed item masks and scores with clear errors."""
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


# ------------------------------------------------------------------------------------ the CLI
def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit status and stderr of ``igdbeam <argv>`` (the tiny assets come from conftest)."""
    code, _, err = run_cli(argv, capsys)
    return code, err


def test_cli_recommend_exclude_history(tiny_assets, tmp_path, capsys) -> None:
    """With 10 beams over a 10-item catalog every allowed item comes back, no item the user
    rated before the target (the whole prior history, not only the row's)."""
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
    # Excluded: everything the user rated before the test row's target, over every split.
    from igdbeam.data.user_history import prior_item_ids

    ds = load_dataset(data)
    test = ds.split("test")
    prior = prior_item_ids(ds, test)
    history = {s.user_id: set(p) for s, p in zip(test, prior, strict=True)}
    assert any(len(p) > len(s.history_item_id) for s, p in zip(test, prior, strict=True))
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
    """The CLI evaluates with CF item scores mixed into the search."""
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
