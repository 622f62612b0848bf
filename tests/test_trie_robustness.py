"""Trie files that are corrupt, truncated or crafted: ``ItemTrie.load`` refuses them with a
TrieFormatError, or the trie it returns works in every native op without crashing.

Native calls on loaded files run in a subprocess, so that a crash (a segfault in the processor
or the beam step) fails a test instead of killing pytest.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from igdbeam import IGDBeamError, ItemTrie, TrieFormatError

PATHS = [[10, 11, 12, 2], [10, 11, 13, 2], [10, 14, 2], [20, 21, 2], [20, 22, 5, 2], [20, 21, 2]]
WEIGHTS = [4.0, 2.0, 1.0, 1.0, 3.0, 1.0]
VOCAB = 30


def base_trie() -> ItemTrie:
    return ItemTrie.from_token_ids(PATHS, WEIGHTS, vocab_size=VOCAB)


# ------------------------------------------------------------------ an independent file writer
def write_trie_file(
    path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], *, crc: bool = True
) -> None:
    """Write ``arrays`` / ``meta`` in the documented layout (trie_io's module docstring).

    Independent of igdbeam's writer, so tests can write arrays and metadata that igdbeam would
    never produce. ``crc=False`` writes a file without checksums (the layout before they were
    added), so the structural checks alone must catch a bad value.
    """
    table: dict[str, dict[str, Any]] = {}
    header = b""
    for _ in range(4):
        offset = (20 + len(header) + 63) // 64 * 64
        for name, arr in arrays.items():
            table[name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset}
            if crc:
                table[name]["crc32"] = zlib.crc32(np.ascontiguousarray(arr).tobytes())
            offset = (offset + arr.nbytes + 63) // 64 * 64
        new = json.dumps({"meta": meta, "arrays": table}).encode()
        if len(new) == len(header):
            break
        header = new
    out = bytearray(offset)
    out[:20] = struct.pack("<8sIQ", b"IGDTRIE\0", 1, len(header))
    out[20 : 20 + len(header)] = header
    for name, arr in arrays.items():
        raw = np.ascontiguousarray(arr).tobytes()
        out[table[name]["offset"] : table[name]["offset"] + len(raw)] = raw
    path.write_bytes(bytes(out))


def parts(trie: ItemTrie) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    return {k: v.numpy().copy() for k, v in trie.arrays().items()}, trie.meta


def assert_same_trie(a: ItemTrie, b: ItemTrie) -> None:
    assert a.meta == b.meta
    assert sorted(a.arrays()) == sorted(b.arrays())
    for name, arr in a.arrays().items():
        assert torch.equal(b.array(name), arr), name


def test_typed_errors_are_value_errors() -> None:
    import igdbeam

    for name in ("TrieFormatError", "VocabularyError", "InvalidIdError"):
        cls = getattr(igdbeam, name)
        assert issubclass(cls, IGDBeamError) and issubclass(cls, ValueError), name
        assert name in igdbeam.__all__
    assert "IGDBeamError" in igdbeam.__all__


def test_independent_writer_round_trip(tmp_path: Path) -> None:
    trie = base_trie()
    for crc in (True, False):
        path = tmp_path / f"w{crc}.igdtrie"
        write_trie_file(path, *parts(trie), crc=crc)
        assert_same_trie(trie, ItemTrie.load(path))
    trie.validate()


# ------------------------------------------------------------------ one bad value at a time
def _set(name: str, index: int, value: Any) -> Callable[[dict, dict], None]:
    def mutate(a: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        a[name][index] = value

    return mutate


def _meta(key: str, value: Any) -> Callable[[dict, dict], None]:
    def mutate(a: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if value is _DROP:
            del meta[key]
        else:
            meta[key] = value

    return mutate


def _replace(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict, dict], None]:
    def mutate(a: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        a[name] = fn(a[name])

    return mutate


def _swap_siblings(a: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    a["token"][[1, 2]] = a["token"][[2, 1]]  # the root's children 10 and 20


def _bad_item_leaf(a: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    a["item_leaf"][[0, 1]] = a["item_leaf"][[1, 0]]


def _duplicate_item(a: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    a["leaf_items"][0] = a["leaf_items"][1]


_DROP = object()

# (mutation, expected message). The example trie: nodes 1, 2 are tokens 10 and 20 below the root.
BAD_VALUES = [
    (_set("token", 3, -5), r"node 3 has token id -5, outside \[0, 30\)"),
    (_set("token", 3, 30), r"node 3 has token id 30"),
    (_set("token", 3, -(2**31)), r"token id -2147483648"),
    (_set("token", 0, 4), r"root .* token -1"),
    (_swap_siblings, r"not strictly ascending"),
    (_set("token", 2, 10), r"not strictly ascending"),
    (_set("parent", 4, 999), r"node 4 has parent 999"),
    (_set("parent", 4, -7), r"node 4 has parent -7"),
    (_set("parent", 4, 2), r"node 4 has parent 2 but lies in the child range of node 1"),
    (_set("parent", 0, 3), r"root"),
    (_set("depth", 5, 9), r"node 5 has depth 9"),
    (_set("depth", 0, 1), r"root"),
    (_set("child_offsets", 2, 1), r"node .* has parent|not monotone"),
    (_set("child_offsets", 0, 0), r"child_offsets"),
    (_set("child_offsets", -1, 99), r"child_offsets"),
    (_set("child_offsets", 1, 2**31 - 1), r"child_offsets"),
    (_set("child_offsets", 1, -(2**31)), r"child_offsets"),
    (_set("entropy", 3, np.nan), r"'entropy' holds a value that is not finite"),
    (_set("info_gain", 3, np.inf), r"'info_gain' holds a value that is not finite"),
    (_set("info_gain_norm", 3, 1.5), r"outside \[0, 1\]"),
    (_set("info_gain_norm", 3, -0.5), r"outside \[0, 1\]"),
    (_set("zero_ig", 3, 7), r"'zero_ig'"),
    (_set("leaf_nodes", 0, 1), r"'leaf_nodes'"),
    (_set("leaf_nodes", 0, 10**6), r"'leaf_nodes'"),
    (_set("leaf_nodes", 0, -1), r"'leaf_nodes'"),
    (_set("leaf_item_offsets", 1, 0), r"'leaf_item_offsets'"),
    (_set("leaf_item_offsets", -1, 99), r"'leaf_item_offsets'"),
    (_set("leaf_items", 0, 6), r"item id outside \[0, 6\)"),
    (_set("leaf_items", 0, -1), r"item id outside"),
    (_duplicate_item, r"lists an item more than once"),
    (_set("item_leaf", 0, 10**6), r"'item_leaf' and 'leaf_items' disagree"),
    (_set("item_leaf", 0, -3), r"disagree"),
    (_bad_item_leaf, r"disagree"),
    (_set("leaf_weight", 0, -1.0), r"'leaf_weight'"),
    (_set("leaf_weight", 0, np.nan), r"'leaf_weight'"),
    (_replace("leaf_weight", np.zeros_like), r"'leaf_weight'"),
    (_replace("token", lambda t: t.astype(np.int64)), r"'token' has dtype int64"),
    (_replace("parent", lambda t: t[:-1]), r"'parent' has \d+ entries"),
    (_replace("leaf_weight", lambda t: t[:-1]), r"'leaf_weight'"),
    (_replace("item_leaf", lambda t: t[:-1]), r"one entry per item"),
    (_replace("token", lambda t: t[:1]), r"nodes|entries"),
    (_replace("depth", lambda t: t.byteswap().view(t.dtype.newbyteorder())), r"dtype"),
    (_meta("max_fanout", 1), r"'max_fanout' is 1"),
    (_meta("max_depth", 2), r"'max_depth' is 2"),
    (_meta("num_items", 5), r"one entry per item"),
    (_meta("num_items", 0), r"'num_items' is 0"),
    (_meta("vocab_size", 12), r"outside \[0, 12\)"),
    (_meta("vocab_size", 0), r"'vocab_size' is 0"),
    (_meta("vocab_size", "30"), r"'vocab_size' must be an integer"),
    (_meta("vocab_size", 30.0), r"'vocab_size' must be an integer"),
    (_meta("max_depth", True), r"'max_depth' must be an integer"),
    (_meta("entropy", "shannon"), r"'entropy' is 'shannon'"),
    (_meta("entropy", ["global"]), r"'entropy'"),
    (_meta("num_items", _DROP), r"'num_items' is missing"),
]


@pytest.mark.parametrize(("mutate", "match"), BAD_VALUES)
@pytest.mark.parametrize("crc", [False, True])
def test_bad_values_are_refused(tmp_path: Path, mutate: Callable, match: str, crc: bool) -> None:
    arrays, meta = parts(base_trie())
    mutate(arrays, meta)
    path = tmp_path / "bad.igdtrie"
    write_trie_file(path, arrays, meta, crc=crc)
    for mmap in (True, False):
        with pytest.raises(TrieFormatError, match=match):
            ItemTrie.load(path, mmap=mmap)


def _rewrite_header(path: Path, edit: Callable[[dict], Any]) -> None:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[12:20])
    header = json.loads(data[20 : 20 + n])
    header_before = json.loads(data[20 : 20 + n])
    new = edit(header)
    first_array = min(e["offset"] for e in header_before["arrays"].values())
    # An edit edits the header in place; one that returns a list replaces it (not an object).
    new = json.dumps(new if isinstance(new, list) else header).encode()
    assert 20 + len(new) <= first_array  # the header still ends before the first array
    path.write_bytes(data[:12] + struct.pack("<Q", len(new)) + new + data[20 + len(new) :])


HEADER_EDITS = [
    (lambda h: h["arrays"].pop("parent"), r"array 'parent' is missing"),
    (lambda h: h["arrays"]["token"].update(dtype="<i8"), r"'token' has dtype int64"),
    (lambda h: h["arrays"]["token"].update(dtype="bogus"), r"bad table entry"),
    (lambda h: h["arrays"]["token"].update(dtype=7), r"bad table entry"),
    (lambda h: h["arrays"]["token"].update(shape=[-4]), r"length -4"),
    (lambda h: h["arrays"]["token"].update(shape=[3, 2]), r"1-element list"),
    (lambda h: h["arrays"]["token"].update(shape="12"), r"1-element list"),
    (lambda h: h["arrays"]["token"].update(shape=[12.0]), r"must be an integer"),
    (lambda h: h["arrays"]["token"].update(offset=0), r"at offset 0"),
    (lambda h: h["arrays"]["token"].update(offset=10**12), r"past the end"),
    (lambda h: h["arrays"]["token"].update(offset="64"), r"must be an integer"),
    (lambda h: h["arrays"]["token"].update(crc32="x"), r"must be an integer"),
    (lambda h: h["arrays"]["token"].update(crc32=1), r"checksum"),
    (lambda h: h["arrays"].update(token=[1, 2]), r"array 'token' is missing"),
    (lambda h: h.update(arrays=[]), r"must be JSON objects"),
    (lambda h: h.update(meta="x"), r"must be JSON objects"),
    (lambda h: h.pop("meta"), r"unreadable header"),
    (lambda h: [1, 2], r"unreadable header"),
]


@pytest.mark.parametrize(("edit", "match"), HEADER_EDITS)
def test_bad_headers_are_refused(tmp_path: Path, edit: Callable, match: str) -> None:
    path = tmp_path / "bad.igdtrie"
    base_trie().save(path)
    _rewrite_header(path, edit)
    with pytest.raises(TrieFormatError, match=match):
        ItemTrie.load(path)


def test_a_flipped_bit_in_any_array_fails_its_checksum(tmp_path: Path) -> None:
    trie = base_trie()
    path = tmp_path / "t.igdtrie"
    trie.save(path)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[12:20])
    table = json.loads(data[20 : 20 + n])["arrays"]
    for name, entry in table.items():
        # A float bit that keeps the value valid (the lowest mantissa bit), so only the checksum
        # can tell.
        corrupt = bytearray(data)
        corrupt[entry["offset"]] ^= 1
        path.write_bytes(bytes(corrupt))
        with pytest.raises(TrieFormatError, match=f"'{name}' fails its checksum"):
            ItemTrie.load(path)


# ------------------------------------------------------------------ native ops in a subprocess
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


WORKER = textwrap.dedent(
    """
    import contextlib, io, json, sys, traceback
    import igdbeam  # imported once (seconds); every job runs in this process until one crashes

    for line in sys.stdin:
        job = json.loads(line)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                sys.argv = ["-c", *job["args"]]
                exec(job["code"], {"__name__": "__main__"})
            ok = True
        except BaseException:
            ok = False
            out.write(traceback.format_exc())
        sys.stdout.write(json.dumps({"ok": ok, "out": out.getvalue()}) + "\\n")
        sys.stdout.flush()
    """
)


class IsolatedPython:
    """Runs code in a child interpreter, so that a crash (segfault, abort) fails one test.

    The child imports igdbeam once and runs job after job; a job that kills it is reported with
    the child's exit status, and the next job starts a fresh child.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()

    def _start(self) -> None:
        import igdbeam

        self.close()

        package_root = str(Path(igdbeam.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines = queue.Queue()
        stdout, lines = self.proc.stdout, self.lines

        def pump() -> None:
            assert stdout is not None
            with contextlib.suppress(ValueError, OSError):  # the pipe closed under us
                for line in stdout:
                    lines.put(line)
            lines.put(None)  # EOF: the child is gone

        threading.Thread(target=pump, daemon=True).start()

    def run(self, code: str, *args: str, timeout: float = 300) -> tuple[bool, str]:
        """Run ``code`` with ``sys.argv[1:] == args``; return ``(ok, output)``.

        ``ok`` is False when the code raised (output ends with the traceback) or the child died
        or hung (output names its exit status).
        """
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        proc = self.proc
        assert proc is not None and proc.stdin is not None
        proc.stdin.write(json.dumps({"code": code, "args": list(args)}) + "\n")
        proc.stdin.flush()
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            proc.kill()
            proc.wait()
            self.close()
            return False, f"the child hung for {timeout} s and was killed"
        if line is None:
            status = proc.wait()
            stderr = proc.stderr.read() if proc.stderr is not None else ""
            self.close()
            return False, (
                f"the child died with exit status {status} (negative: signal {-status})\n"
                f"stderr: {stderr[-4000:]}"
            )
        reply = json.loads(line)
        return bool(reply["ok"]), str(reply["out"])

    def close(self) -> None:
        """Stop the child (if alive) and close its pipes."""
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self.proc = None


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
        st.sampled_from(sorted(base_trie().arrays())),
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
        arrays, meta = parts(base_trie())
        arr = arrays[name]
        if arr.dtype.kind in "iu":
            value = int(value)
            info = np.iinfo(arr.dtype)
            value = min(max(value, info.min), info.max)
        arr[index % arr.shape[0]] = value
        write_trie_file(path, arrays, meta, crc=crc)


def test_mutated_files_are_refused_or_safe(tmp_path: Path, isolated: IsolatedPython) -> None:
    good = tmp_path / "good.igdtrie"
    base_trie().save(good)
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
        _C.processor_step_cpu(view, ids.data_ptr(), 1, 2, 2, 1, scores.data_ptr(), 0, vocab, vocab,
                              0.0, 1.0, False, -1, nodes.data_ptr(), status.data_ptr())
    except ValueError as exc:
        outcomes.append("native:" + ("negative token id" in str(exc)).__repr__())
    out = [torch.empty(1, 2), torch.empty(1, 2), torch.empty(1, 2, dtype=torch.int32),
           torch.empty(1, 2, dtype=torch.int64), torch.empty(1, 2, dtype=torch.int32)]
    logits, bs = torch.zeros(1, vocab), torch.zeros(1)
    for node in (1, 99):
        n = torch.tensor([node], dtype=torch.int32)
        try:
            _C.beam_step_cpu(view, logits.data_ptr(), 0, 1, 1, vocab, vocab, bs.data_ptr(),
                             n.data_ptr(), 0.0, 1.0, False, 2, *(t.data_ptr() for t in out))
        except ValueError as exc:
            outcomes.append(f"native-beam-{node}")
    toks, lens, o = torch.tensor([[10, 11]]), torch.tensor([5]), torch.empty(1, dtype=torch.int32)
    try:
        _C.walk_paths_cpu(view, toks.data_ptr(), 1, 2, 2, lens.data_ptr(), o.data_ptr())
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


def test_file_with_negative_token_is_refused_before_any_kernel(tmp_path: Path) -> None:
    arrays, meta = parts(base_trie())
    arrays["token"][3] = -1_000_000
    path = tmp_path / "neg.igdtrie"
    write_trie_file(path, arrays, meta, crc=False)
    with pytest.raises(TrieFormatError, match="node 3 has token id -1000000"):
        ItemTrie.load(path)


# ------------------------------------------------------------------ the memory-map contract
def test_copy_on_load_is_independent_of_the_file(tmp_path: Path) -> None:
    trie = base_trie()
    path = tmp_path / "t.igdtrie"
    trie.save(path)
    copied = ItemTrie.load(path, mmap=False)
    # Overwrite the file in place (what the memory-map contract forbids for mmap=True): the
    # copied trie does not notice, not even when the file shrinks to nothing.
    with open(path, "r+b") as f:
        f.write(b"\xff" * len(path.read_bytes()))
    with open(path, "r+b") as f:
        f.truncate(0)
    assert_same_trie(trie, copied)
    assert copied.walk([PATHS[4]]).tolist() == [int(trie.array("item_leaf")[4])]


def test_mmap_trie_survives_a_save_over_its_file(tmp_path: Path) -> None:
    first = base_trie()
    second = ItemTrie.from_token_ids([[3, 4, 2], [3, 5, 2]], vocab_size=VOCAB)
    path = tmp_path / "t.igdtrie"
    first.save(path)
    mapped = ItemTrie.load(path)  # mmap=True: pages of the file
    second.save(path)  # a rename: the mapped inode stays as it was
    assert_same_trie(first, mapped)
    assert_same_trie(second, ItemTrie.load(path))
    mapped.save(path)  # saving a trie mapped from the destination itself
    assert_same_trie(first, ItemTrie.load(path))
    assert_same_trie(first, mapped)


# Last in the file: it kills the shared child, and a later test would pay a fresh import.
def test_isolated_runner_reports_errors_and_crashes(isolated: IsolatedPython) -> None:
    ok, out = isolated.run("import sys; print(sys.argv[1:])", "a", "b")
    assert ok and out.strip() == "['a', 'b']"
    ok, out = isolated.run("raise ValueError('boom')")
    assert not ok and "ValueError: boom" in out
    ok, out = isolated.run("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert not ok and f"signal {int(signal.SIGSEGV)}" in out
