"""Randomly mutated trie files: ``ItemTrie.load`` refuses them, or every native op runs on the
trie it returns without crashing. Native calls run in a child interpreter (``isolated_python``),
so that a crash (a segfault in the processor or the beam step) fails a test instead of pytest."""

from __future__ import annotations

import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factories.trie_files import file_trie, trie_parts, write_trie_file
from igdbeam import ItemTrie, TrieFormatError
from isolated_python import IsolatedPython

EXERCISE = textwrap.dedent(
    """
    import pickle, sys
    import torch
    from igdbeam import ItemTrie, TrieFormatError, beam_step, label_token_weights, processor_step

    for path in sys.argv[1:]:
        trie = ItemTrie.load(path)
        trie.validate()
        n = trie.num_nodes
        vocab = max(trie.vocab_size or 1, int(trie.token.max()) + 1)
        item_paths = [trie.item_path(i) for i in range(trie.num_items)]
        width = max(len(p) for p in item_paths)
        tokens = torch.zeros(len(item_paths), width, dtype=torch.int64)
        for r, p in enumerate(item_paths):
            tokens[r, : len(p)] = torch.tensor(p)
        lengths = torch.tensor([len(p) for p in item_paths])
        nodes = trie.walk(tokens, lengths)
        assert torch.equal(nodes, trie.array("item_leaf")), path
        assert trie.item_ids_of_nodes(nodes).tolist() == [
            min(trie.items_of_node(int(x))) for x in nodes
        ]
        trie.item_ids_of_nodes(torch.arange(-2, n + 2))
        labels = torch.where(torch.arange(width) < lengths[:, None], tokens, -100)
        tw = label_token_weights(labels, trie, 0.25, off_trie="error")
        assert tw.num_left_trie == 0
        g = torch.Generator().manual_seed(0)
        for prefix in range(width + 1):
            ids = torch.cat([torch.ones(len(item_paths), 1, dtype=torch.int64),
                             tokens[:, :prefix]], 1)
            for dtype in (torch.float32, torch.bfloat16):
                scores = torch.randn(len(item_paths), vocab, generator=g).to(dtype)
                got, status = processor_step(trie, ids, scores, prompt_length=1, alpha=0.5,
                                             eos_token_id=0)
                assert got.shape[0] == len(item_paths)
        beams = 3
        run_nodes = torch.zeros(2 * beams, dtype=torch.int32)
        run_scores = torch.zeros(2 * beams)
        for _ in range(trie.max_depth + 1):
            logits = torch.randn(2 * beams, vocab, generator=g)
            out = beam_step(trie, logits, run_scores, run_nodes, beams=beams,
                            num_candidates=2 * beams, alpha=0.3, renormalize=True)
            pick = out.beam[:, :beams].clamp(min=0) + torch.arange(2)[:, None] * beams
            run_nodes = out.node[:, :beams].reshape(-1).contiguous()
            run_scores = out.score[:, :beams].reshape(-1).contiguous()
            run_scores = torch.nan_to_num(run_scores, neginf=-1e30)
            assert int(pick.max()) < 2 * beams
        trie.stats()
        again = pickle.loads(pickle.dumps(trie))
        assert torch.equal(again.token, trie.token)
    print("exercised", len(sys.argv) - 1)
    """
)


@pytest.fixture(scope="module")
def isolated() -> Iterator[IsolatedPython]:
    runner = IsolatedPython()
    yield runner
    runner.close()


MUTATION = st.one_of(
    # Flip up to 3 bits anywhere in the file (header or arrays; the checksums catch the arrays).
    st.tuples(
        st.just("flip"),
        st.lists(
            st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)), min_size=1, max_size=3
        ),
    ),
    # Cut the file short.
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    # Set one array entry to an interesting value and write a consistent file (fresh checksums,
    # or none): only the structural checks stand between it and the kernels.
    st.tuples(
        st.just("set"),
        st.sampled_from(sorted(file_trie().arrays())),
        st.integers(0, 40),
        st.sampled_from(
            [
                -(2**31),
                -2,
                -1,
                0,
                1,
                2,
                3,
                5,
                11,
                12,
                13,
                21,
                29,
                30,
                31,
                2**15,
                2**31 - 1,
                0.5,
                1.5,
                -0.5,
            ]
        ),
        st.booleans(),
    ),
)


def _apply(data: bytes, mutation: tuple, path: Path) -> None:
    kind = mutation[0]
    if kind == "flip":
        raw = bytearray(data)
        for where, bit in mutation[1]:
            raw[int(where * len(raw))] ^= 1 << bit
        path.write_bytes(bytes(raw))
    elif kind == "truncate":
        path.write_bytes(data[: int(mutation[1] * len(data))])
    else:
        _, name, index, value, crc = mutation
        arrays, meta = trie_parts(file_trie())
        arr = arrays[name]
        if arr.dtype.kind in "iu":
            value = int(value)
            info = np.iinfo(arr.dtype)
            value = min(max(value, info.min), info.max)
        arr[index % arr.shape[0]] = value
        write_trie_file(path, arrays, meta, crc=crc)


def test_mutated_files_are_refused_or_safe(tmp_path: Path, isolated: IsolatedPython) -> None:
    good = tmp_path / "good.igdtrie"
    file_trie().save(good)
    data = good.read_bytes()
    survivors: list[str] = [str(good)]
    refused = 0
    counter = iter(range(10**9))

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(MUTATION)
    def check(mutation: tuple) -> None:
        nonlocal refused
        path = tmp_path / f"m{next(counter)}.igdtrie"
        _apply(data, mutation, path)
        try:
            ItemTrie.load(path)
        except TrieFormatError:
            refused += 1
            path.unlink()
            return
        survivors.append(str(path))

    check()
    assert refused > 0 and len(survivors) > 5  # both outcomes are exercised
    # Every file that loads must survive every native op (and agree with itself).
    ok, out = isolated.run(EXERCISE, *survivors)
    assert ok, out
    assert f"exercised {len(survivors)}" in out


NEGATIVE_TOKEN_OPS = textwrap.dedent(
    """
    import sys, torch
    from igdbeam import ItemTrie, beam_step, processor_step
    from igdbeam.native.dispatch import raise_for_status
    from igdbeam.native.library import _C

    src = ItemTrie.from_token_ids([[10, 11, 2], [10, 12, 2], [20, 2]])
    arrays = {k: v.clone() for k, v in src.arrays().items()}
    arrays["token"][3] = -1000000  # a child of node 1: a corrupt trie that bypassed load
    trie = ItemTrie(arrays, src.meta)
    vocab = 32
    ids = torch.tensor([[1, 10]])
    outcomes = []
    try:
        processor_step(trie, ids, torch.zeros(1, vocab), prompt_length=1)
    except ValueError as exc:
        outcomes.append(type(exc).__name__)
    try:
        beam_step(trie, torch.zeros(1, vocab), torch.zeros(1), torch.tensor([1], dtype=torch.int32),
                  beams=1, num_candidates=2)
    except ValueError as exc:
        outcomes.append(type(exc).__name__)
    # The native entry points check on their own (no Python layer in between).
    view = trie.native_view()
    scores = torch.zeros(1, vocab)
    nodes, status = torch.empty(1, dtype=torch.int32), torch.empty(1, dtype=torch.int32)
    try:
        raise_for_status("processor_step", _C.processor_step(
            view, ids.data_ptr(), 1, 2, 2, 1, scores.data_ptr(), 0, vocab, vocab, 0.0, 1.0, False,
            -1, nodes.data_ptr(), status.data_ptr(), 0, 0, 0.0, 0, 0, 0, 0))
    except ValueError as exc:
        outcomes.append("native:" + ("negative token id" in str(exc)).__repr__())
    out = [torch.empty(1, 2), torch.empty(1, 2), torch.empty(1, 2, dtype=torch.int32),
           torch.empty(1, 2, dtype=torch.int64), torch.empty(1, 2, dtype=torch.int32)]
    logits, bs = torch.zeros(1, vocab), torch.zeros(1)
    for node in (1, 99):
        n = torch.tensor([node], dtype=torch.int32)
        try:
            raise_for_status("beam_step", _C.beam_step(
                view, logits.data_ptr(), 0, 1, 1, vocab, vocab, bs.data_ptr(), n.data_ptr(), 0.0,
                1.0, False, 2, *(t.data_ptr() for t in out), 0, 0, 0.0, 0, 0, 0, 0, 0, 0))
        except ValueError as exc:
            outcomes.append(f"native-beam-{node}")
    toks, lens, o = torch.tensor([[10, 11]]), torch.tensor([5]), torch.empty(1, dtype=torch.int32)
    try:
        raise_for_status("walk_paths", _C.walk_paths(
            view, toks.data_ptr(), 1, 2, 2, lens.data_ptr(), o.data_ptr(), 0, 0))
    except ValueError as exc:
        outcomes.append("native-walk-lengths")
    print(outcomes)
    """
)


def test_negative_trie_tokens_raise_instead_of_crashing(isolated: IsolatedPython) -> None:
    ok, out = isolated.run(NEGATIVE_TOKEN_OPS)
    assert ok, out
    assert out.strip() == str(
        [
            "VocabularyError",
            "VocabularyError",
            "native:True",
            "native-beam-1",
            "native-beam-99",
            "native-walk-lengths",
        ]
    )


# Last in the file: it kills the shared child, and a later test would pay a fresh import.
def test_isolated_runner_reports_errors_and_crashes(isolated: IsolatedPython) -> None:
    ok, out = isolated.run("import sys; print(sys.argv[1:])", "a", "b")
    assert ok and out.strip() == "['a', 'b']"
    ok, out = isolated.run("raise ValueError('boom')")
    assert not ok and "ValueError: boom" in out
    ok, out = isolated.run("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert not ok and f"signal {int(signal.SIGSEGV)}" in out
