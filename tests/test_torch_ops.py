"""The native ops registered with ``torch.library`` (``torch.ops.igdbeam.*``).

* ``torch.library.opcheck`` of every op over several argument sets (schema, fake tensor,
  autograd registration, AOT dispatch with dynamic shapes), on each backend present;
* the fake implementations against the real outputs' shapes, dtypes and devices;
* the public functions run the registered ops (a dispatch-mode recorder) and the registered ops
  alone call the pybind11 bindings;
* ``torch.compile(fullgraph=True)`` of a training step that calls ``igd_loss`` (forward and
  backward) and of decode steps that call the beam step and the processor step: no graph break,
  results equal to eager (and the training loss to the float64 oracle); the value checks still
  raise their typed errors inside a compiled graph. These compile with the CPU inductor (C++)
  and are marked slow (~30-60 s on this machine's 2 shared cores, most of it the first C++
  compilation; inductor caches it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from cuda_testing import cuda_marks
from filter_testing import filter_catalog
from igdbeam import ItemTrie, igd_loss, label_token_weights
from igdbeam.errors import LeftTrieError, VocabularyError
from igdbeam.native import dispatch
from igdbeam.native.torch_ops import REGISTERED, trie_operands
from igdbeam.ops.decode_steps import beam_step, processor_step
from igdbeam.ops.node_filters import node_filters
from oracles.loss import reference_igd_loss, reference_row_weights
from oracles.trie import ReferenceTrie

I = -100  # noqa: E741
PATHS = [[10, 11, 12, 2], [10, 11, 13, 2], [10, 14, 2], [20, 21, 2]]
WEIGHTS = [4.0, 2.0, 1.0, 1.0]
VOCAB = 32
ops = torch.ops.igdbeam


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=cuda_marks)])
def backend(request: pytest.FixtureRequest) -> str:
    """The device the ops run on."""
    return request.param


@pytest.fixture(scope="module")
def cpu_trie() -> ItemTrie:
    """The trie of PATHS on the CPU."""
    return ItemTrie.from_token_ids(PATHS, WEIGHTS, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def cpu_filter_trie() -> ItemTrie:
    """A 30-item synthetic catalog (a duplicate title included) for the node filters."""
    paths, weights = filter_catalog()
    return ItemTrie.from_token_ids(paths, weights)


def _trie(trie: ItemTrie) -> tuple[list[torch.Tensor], int]:
    return trie_operands(trie), trie.max_fanout


# ------------------------------------------------------------------------ argument sets
def walk_cases(trie: ItemTrie, dev: str) -> list[tuple[Any, ...]]:
    t, f = _trie(trie)
    tokens = torch.tensor([[10, 11, 12, 2], [10, 14, 2, 0], [20, 9, 0, 0]], device=dev)
    lengths = torch.tensor([4, 3, 1], device=dev)
    return [
        (t, f, tokens, None),
        (t, f, tokens, lengths),
        (t, f, tokens[:0], None),
    ]


def label_cases(trie: ItemTrie, dev: str) -> list[tuple[Any, ...]]:
    t, f = _trie(trie)
    labels = torch.tensor(
        [[I, 10, 11, 12, 2, I], [I, I, 20, 21, 2, I], [I, 10, 9, I, I, I]], device=dev
    )
    on_trie = labels[:2].contiguous()
    return [
        (t, f, labels, I, 0.1, 1),  # uniform, one row leaves the trie
        (t, f, labels, I, 0.5, 2),  # ignore
        (t, f, on_trie, I, 0.25, 0),  # error policy, every row on the trie
        (t, f, labels[:, :0].contiguous(), I, 0.1, 1),  # no columns
    ]


def check_label_cases(dev: str) -> list[tuple[Any, ...]]:
    labels = torch.tensor([[I, 3, 31], [0, I, I]], device=dev)
    return [(labels, VOCAB, I, "labels"), (labels, -1, I, "cf_labels"), (labels[:0], 4, I, "x")]


def _filters(trie: ItemTrie, dev: str, rows: int, weight: float = 0.5) -> Any:
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(rows, trie.num_items, generator=g) < 0.7
    scores = torch.randn(rows, trie.num_items, generator=g)
    return node_filters(trie.to(dev), mask, scores, item_score_weight=weight)


def processor_cases(trie: ItemTrie, ftrie: ItemTrie, dev: str) -> list[tuple[Any, ...]]:
    g = torch.Generator().manual_seed(1)
    t, f = _trie(trie)
    ids = torch.tensor([[5, 5, 10, 11], [5, 5, 20, 21], [5, 5, 10, 14], [5, 5, 9, 9]], device=dev)
    scores = torch.randn(4, VOCAB, generator=g).to(dev)
    none = (None, None, 0.0, None, 0)
    ft, ff = _trie(ftrie)
    filt = _filters(ftrie, dev, rows=2)
    first = ftrie.child_tokens[:2].tolist()
    fids = torch.tensor([[1, first[0]], [1, first[1]], [1, first[0]]], device=dev)
    frows = torch.tensor([0, 1, 1], dtype=torch.int32, device=dev)
    fscores = torch.randn(3, 80, generator=g).to(dev)
    return [
        (t, f, ids, scores.clone(), 2, 0.5, 1.0, False, -1, *none, True),
        (t, f, ids, scores.to(torch.bfloat16), 2, 0.3, 0.7, True, 2, *none, True),
        (
            t,
            f,
            ids[:, :2].contiguous(),
            scores.to(torch.float16),
            2,
            1.0,
            1.0,
            False,
            2,
            *none,
            True,
        ),
        (
            ft,
            ff,
            fids,
            fscores,
            1,
            0.2,
            1.0,
            True,
            -1,
            filt.mask_words,
            filt.node_scores,
            0.5,
            frows,
            2,
            True,
        ),
    ]


def beam_cases(trie: ItemTrie, ftrie: ItemTrie, dev: str) -> list[tuple[Any, ...]]:
    g = torch.Generator().manual_seed(2)
    t, f = _trie(trie)
    logits = torch.randn(4, VOCAB, generator=g).to(dev)
    scores = torch.tensor([0.0, -1.0, -0.5, -2.0], device=dev)
    nodes = torch.tensor([0, 1, 0, -1], dtype=torch.int32, device=dev)
    none = (None, None, 0.0, None, 0)
    ft, ff = _trie(ftrie)
    filt = _filters(ftrie, dev, rows=3, weight=0.7)
    flogits = torch.randn(6, 80, generator=g).to(dev)
    fscores = torch.zeros(6, device=dev)
    fnodes = torch.zeros(6, dtype=torch.int32, device=dev)
    frows = torch.tensor([2, 0, 1], dtype=torch.int32, device=dev)
    return [
        (t, f, logits, scores, nodes, 2, 0.5, 1.0, False, 3, *none, 0, 0),
        (t, f, logits.to(torch.bfloat16), scores, nodes, 1, 0.0, 0.8, True, 2, *none, 0, 0),
        (t, f, logits.to(torch.float16), scores, nodes, 4, 1.0, 1.0, False, 5, *none, 0, 7),
        (
            ft,
            ff,
            flogits,
            fscores,
            fnodes,
            2,
            0.3,
            1.0,
            False,
            4,
            filt.mask_words,
            filt.node_scores,
            0.7,
            frows,
            3,
            0,
            0,
        ),
    ]


def filter_cases(ftrie: ItemTrie, dev: str) -> list[tuple[Any, ...]]:
    t, f = _trie(ftrie)
    a = ftrie.arrays()
    leaves = (a["leaf_nodes"], a["leaf_item_offsets"], a["leaf_items"])
    g = torch.Generator().manual_seed(4)
    n = ftrie.num_items
    mask = (torch.rand(70, n, generator=g) < 0.5).to(dev)
    scores = torch.randn(3, n, generator=g).to(dev)
    depth = ftrie.max_depth
    return [
        (t, f, *leaves, n, 1, mask[:1], None, depth),  # one mask row for every prompt
        (t, f, *leaves, n, 3, None, scores, depth),
        (t, f, *leaves, n, 70, mask, scores[:1].contiguous(), depth),  # 70 prompts: 2 words
    ]


def all_cases(trie: ItemTrie, ftrie: ItemTrie, dev: str) -> list[tuple[str, tuple[Any, ...]]]:
    trie, ftrie = trie.to(dev), ftrie.to(dev)
    cases: list[tuple[str, tuple[Any, ...]]] = []
    cases += [("walk_paths", c) for c in walk_cases(trie, dev)]
    cases += [("label_weights", c) for c in label_cases(trie, dev)]
    cases += [("check_labels", c) for c in check_label_cases(dev)]
    cases += [("processor_step", c) for c in processor_cases(trie, ftrie, dev)]
    cases += [("beam_step", c) for c in beam_cases(trie, ftrie, dev)]
    cases += [("build_node_filters", c) for c in filter_cases(ftrie, dev)]
    return cases


# ------------------------------------------------------------------------------- opcheck
@pytest.mark.parametrize("op", sorted(REGISTERED))
def test_opcheck(op: str, backend: str, cpu_trie: ItemTrie, cpu_filter_trie: ItemTrie) -> None:
    cases = [c for name, c in all_cases(cpu_trie, cpu_filter_trie, backend) if name == op]
    assert len(cases) >= 3
    for args in cases:
        result = torch.library.opcheck(REGISTERED[op], args)
        assert set(result.values()) == {"SUCCESS"}, (op, result)


def test_opcheck_with_logits_that_require_grad(cpu_trie: ItemTrie) -> None:
    # The decode ops are not differentiable: their outputs never require grad.
    args = list(beam_cases(cpu_trie, cpu_trie, "cpu")[0])
    args[2] = args[2].clone().requires_grad_()
    result = torch.library.opcheck(REGISTERED["beam_step"], tuple(args))
    assert set(result.values()) == {"SUCCESS"}
    out = REGISTERED["beam_step"](*args)
    assert not any(t.requires_grad for t in out)


def _meta(t: torch.Tensor) -> tuple[tuple[int, ...], torch.dtype, str]:
    return tuple(t.shape), t.dtype, t.device.type


def test_fake_outputs_match_real(
    backend: str, cpu_trie: ItemTrie, cpu_filter_trie: ItemTrie
) -> None:
    for name, args in all_cases(cpu_trie, cpu_filter_trie, backend):
        real = REGISTERED[name](*args)
        with FakeTensorMode(allow_non_fake_inputs=False) as mode:
            fake_args = [
                [mode.from_tensor(x) for x in a]
                if isinstance(a, list)
                else (mode.from_tensor(a) if isinstance(a, torch.Tensor) else a)
                for a in args
            ]
            fake = REGISTERED[name](*fake_args)
        if real is None:
            assert fake is None
            continue
        real_t = real if isinstance(real, tuple) else (real,)
        fake_t = fake if isinstance(fake, tuple) else (fake,)
        assert [_meta(t) for t in fake_t] == [_meta(t) for t in real_t], name


# -------------------------------------------------------------------------- the routing
class OpRecorder(TorchDispatchMode):
    """Records every op that reaches the dispatcher's Python mode."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Any] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


class BindingSpy:
    """Stands in for ``igdbeam._C`` in ``native.dispatch`` and records the bindings called."""

    def __init__(self, module: Any) -> None:
        self.module, self.calls = module, []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        return getattr(self.module, name)


def _routes(fn: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    spy = BindingSpy(dispatch._C)
    monkeypatch.setattr(dispatch, "_C", spy)
    with OpRecorder() as rec:
        fn()
    monkeypatch.undo()
    names = [f._schema.name.split("::")[1] for f in rec.ops if f._schema.name.startswith("igd")]
    return names, spy.calls


def test_public_functions_route_through_the_registered_ops(
    cpu_trie: ItemTrie, cpu_filter_trie: ItemTrie, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = torch.tensor([[I, 10, 11, 12, 2], [I, I, 20, 21, 2]])
    logits = torch.randn(2, 5, VOCAB)
    scores = torch.randn(2, VOCAB)
    ids = torch.tensor([[7, 10], [7, 20]])
    beam_args = (torch.randn(2, VOCAB), torch.zeros(2), torch.zeros(2, dtype=torch.int32))
    mask = torch.ones(cpu_filter_trie.num_items, dtype=torch.bool)
    calls = {
        "label_token_weights": lambda: label_token_weights(labels, cpu_trie, 0.1),
        "igd_loss": lambda: igd_loss(logits, labels, cpu_trie, 0.1),
        "processor_step": lambda: processor_step(cpu_trie, ids, scores, prompt_length=1),
        "beam_step": lambda: beam_step(cpu_trie, *beam_args, beams=2, num_candidates=2),
        "node_filters": lambda: node_filters(cpu_filter_trie, mask),
        "walk": lambda: cpu_trie.walk([[10, 11], [20]]),
    }
    expected = {
        "label_token_weights": (["check_labels", "label_weights"], ["label_weights"]),
        "igd_loss": (["check_labels", "label_weights"], ["label_weights"]),
        "processor_step": (["processor_step"], ["processor_step"]),
        "beam_step": (["beam_step"], ["beam_step"]),
        "node_filters": (["build_node_filters"], ["build_node_filters"]),
        "walk": (["walk_paths"], ["walk_paths"]),
    }
    for name, fn in calls.items():
        assert _routes(fn, monkeypatch) == expected[name], name


def _python_walk(trie: ItemTrie, path: list[int]) -> int:
    """The node ``path`` reaches, by scanning the CSR child lists in Python (-1: off)."""
    off, tok = trie.child_offsets.tolist(), trie.token.tolist()
    node = 0
    for t in path:
        children = [c for c in range(off[node], off[node + 1]) if tok[c] == t]
        if not children:
            return -1
        node = children[0]
    return node


def test_ops_give_the_public_functions_results(cpu_trie: ItemTrie) -> None:
    # The public function and its op on the same inputs give the same tensors; the walk's nodes
    # equal a Python scan of the child lists.
    labels = torch.tensor([[I, 10, 11, 12, 2], [I, 20, 21, 2, I]])
    tw = label_token_weights(labels, cpu_trie, 0.3)
    direct = REGISTERED["label_weights"](*_trie(cpu_trie), labels, I, 0.3, 1)
    for a, b in zip((tw.info_gain, tw.zero_ig, tw.weight, tw.row_status), direct, strict=True):
        assert torch.equal(a, b)
    ref = ReferenceTrie(PATHS, WEIGHTS)
    want = [reference_row_weights(ref, row, 0.3)[2] for row in labels.tolist()]
    torch.testing.assert_close(tw.weight, torch.tensor(want, dtype=torch.float32))
    paths = [[10, 11, 13], [20, 21], [10, 9]]
    tokens = torch.tensor([[10, 11, 13], [20, 21, 0], [10, 9, 0]])
    nodes = REGISTERED["walk_paths"](*_trie(cpu_trie), tokens, torch.tensor([3, 2, 2]))
    assert nodes.tolist() == [_python_walk(cpu_trie, p) for p in paths]
    assert nodes.tolist() == cpu_trie.walk(paths).tolist()
    assert nodes.tolist()[2] == -1


# ---------------------------------------------------------------------- torch.compile
def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(VOCAB, 16), torch.nn.Linear(16, VOCAB))


def _train_labels() -> torch.Tensor:
    # Row 2 leaves the trie (token 9 is no child of 10): off_trie="uniform" weighs it beta.
    return torch.tensor(
        [[I, I, 10, 11, 12, 2], [I, 20, 21, 2, I, I], [I, I, I, 10, 14, 2], [I, I, 10, 9, 2, I]]
    )


@pytest.mark.slow
def test_compiled_training_step_matches_eager(cpu_trie: ItemTrie) -> None:
    model = _tiny_model()
    labels = _train_labels()
    inputs = labels.clamp(min=0)
    beta = 0.2

    def step(inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(inputs)
        return igd_loss(logits, labels, cpu_trie, beta), logits

    compiled = torch.compile(step, fullgraph=True)
    loss_c, _ = compiled(inputs, labels)
    loss_c.backward()
    grads_c = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss_e, logits_e = step(inputs, labels)
    loss_e.backward()
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-6, atol=1e-6)
    for gc, p in zip(grads_c, model.parameters(), strict=True):
        torch.testing.assert_close(gc, p.grad, rtol=1e-5, atol=1e-6)
    oracle = reference_igd_loss(
        logits_e.detach().double().tolist(), labels.tolist(), ReferenceTrie(PATHS, WEIGHTS), beta
    )
    assert math.isclose(loss_c.detach().item(), oracle, rel_tol=1e-5)
    # A second step with other labels of the same shape reuses the graph.
    other = _train_labels().flip(0).contiguous()
    torch.testing.assert_close(
        compiled(other.clamp(min=0), other)[0], step(other.clamp(min=0), other)[0]
    )


@pytest.mark.slow
def test_value_checks_raise_inside_a_compiled_graph(cpu_trie: ItemTrie) -> None:
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return igd_loss(logits, labels, cpu_trie, 0.1, off_trie="error")

    compiled = torch.compile(loss, fullgraph=True)
    logits = torch.randn(2, 5, VOCAB)
    good = torch.tensor([[I, 10, 11, 12, 2], [I, 20, 21, 2, I]])
    torch.testing.assert_close(compiled(logits, good), loss(logits, good))
    left = torch.tensor([[I, 10, 11, 12, 2], [I, 20, 9, 2, I]])
    with pytest.raises(LeftTrieError, match=r"row\(s\) \[1\].*token 9 is not a child"):
        compiled(logits, left)
    outside = torch.tensor([[I, 10, 11, 12, 2], [I, 20, VOCAB, 2, I]])
    with pytest.raises(VocabularyError, match=r"labels\[1, 2\] = 32"):
        compiled(logits, outside)


@pytest.mark.slow
def test_compiled_decode_steps_match_eager(cpu_trie: ItemTrie, cpu_filter_trie: ItemTrie) -> None:
    ftrie = cpu_filter_trie
    filt = _filters(ftrie, "cpu", rows=2, weight=0.6)

    def decode(logits: torch.Tensor, beam_scores: torch.Tensor, nodes: torch.Tensor) -> Any:
        out = beam_step(
            ftrie, logits, beam_scores, nodes, beams=2, num_candidates=3, alpha=0.4, filters=filt
        )
        keep = out.beam >= 0
        next_scores = torch.where(keep, out.score, torch.full_like(out.score, -math.inf))
        return out, next_scores.flatten(), out.node.flatten()

    g = torch.Generator().manual_seed(9)
    logits = torch.randn(4, 80, generator=g)
    beam_scores = torch.tensor([0.0, -0.5, 0.0, -1.0])
    nodes = torch.tensor([0, 0, 0, -1], dtype=torch.int32)
    compiled = torch.compile(decode, fullgraph=True)
    for _ in range(2):  # two steps: the second from the first's nodes
        got, want = compiled(logits, beam_scores, nodes), decode(logits, beam_scores, nodes)
        for a, b in zip(got[0], want[0], strict=True):
            assert torch.equal(a, b)
        assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
        beam_scores = want[1][:4].clone()
        nodes = want[2][:4].clone()
        logits = torch.randn(4, 80, generator=g)

    def process(ids: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nodes, status = processor_step(cpu_trie, ids, scores, prompt_length=1, alpha=0.5)
        return nodes, torch.where((status == 0).unsqueeze(1), scores.softmax(-1), 0.0)

    ids = torch.tensor([[7, 10, 11], [7, 20, 21], [7, 10, 9]])
    scores_c = torch.randn(3, VOCAB, generator=g).log_softmax(-1)
    scores_e = scores_c.clone()
    got_p = torch.compile(process, fullgraph=True)(ids, scores_c)
    want_p = process(ids, scores_e)
    assert torch.equal(got_p[0], want_p[0]) and torch.equal(scores_c, scores_e)
    torch.testing.assert_close(got_p[1], want_p[1])
    assert got_p[0].tolist()[2] == -1  # the third row left the trie
