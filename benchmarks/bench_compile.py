"""Benchmark of a compiled IGD training step: ``torch.compile(fullgraph=True)`` against eager, CPU.

Run: ``PYTHONPATH=python python -m pytest benchmarks/bench_compile.py`` (``IGDBEAM_BENCH_QUICK=1``
for the small CI sizes). The first call compiles (about a minute or two on a small CPU: the
CPU inductor builds C++ kernels, cached afterwards in inductor's cache folder).

* ``compile-step``: one SGD step (forward, ``igd_loss``, backward, update) of a small Llama.
  The compiled step compiles the model's forward and ``igd_loss`` into one graph (``fullgraph``:
  the registered ops ``igdbeam::check_labels`` and ``igdbeam::label_weights`` sit in the graph,
  no graph break) and its backward through AOTAutograd; the optimizer update is eager in both.
  Correctness first: the compiled loss and gradients equal eager's (float32 tolerances). Roles:
  ``eager`` (the baseline) and ``igdbeam`` (the compiled step): ratio = eager / compiled, above 1
  when the compiled step is faster. Also timed alternately ("alt" row), which is robust to load
  drift on a shared machine; the compile time is a fact of the group.
"""

from __future__ import annotations

import copy
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from benchmarks.conftest import QUICK
from factories.catalogs import synthetic_catalog
from factories.models import tiny_llama
from igdbeam import ItemTrie, igd_loss

IGNORE = -100
BETA = 0.1
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _label_batch(items: list[list[int]], rows: int, cols: int, seed: int) -> torch.Tensor:
    """Right-padded SFT labels: a prompt (-100), an item path, padding (-100)."""
    rng = random.Random(seed)
    labels = torch.full((rows, cols), IGNORE, dtype=torch.int64)
    for r in range(rows):
        path = rng.choice(items)
        end = rng.randint(cols * 3 // 4, cols)
        labels[r, end - len(path) : end] = torch.tensor(path)
    return labels


@dataclass
class CompileCase:
    """The two models (same initial weights), the batch and the compile facts."""

    eager_model: torch.nn.Module
    compiled_model: torch.nn.Module
    eager_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    compiled_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    input_ids: torch.Tensor
    labels: torch.Tensor
    compile_s: float

    @property
    def group(self) -> str:
        """The report group of this batch."""
        return f"train step compiled {tuple(self.labels.shape)}"


def _loss_fn(
    model: torch.nn.Module, trie: ItemTrie
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return igd_loss(model(input_ids=input_ids).logits, labels, trie, BETA)

    return loss


@pytest.fixture(scope="module")
def case() -> CompileCase:
    """A small Llama, a catalog trie and one batch; compiles once and checks against eager."""
    vocab = 1024 if QUICK else 4096
    rows, cols = (4, 64) if QUICK else (8, 128)
    hidden = 64 if QUICK else 128
    items = synthetic_catalog(
        2000, vocab, seed=2, min_len=3, max_len=12, heads=300, alphabet=None
    ).paths()
    trie = ItemTrie.from_token_ids(items, vocab_size=vocab)
    labels = _label_batch(items, rows, cols, seed=3)
    g = torch.Generator().manual_seed(0)
    input_ids = torch.where(
        labels != IGNORE, labels, torch.randint(3, vocab, labels.shape, generator=g)
    )
    eager_model = tiny_llama(
        vocab, sharpen=None, hidden=hidden, intermediate=4 * hidden, kv_heads=4, max_positions=1024
    ).train()
    compiled_model = copy.deepcopy(eager_model)
    eager_loss = _loss_fn(eager_model, trie)
    compiled_loss = torch.compile(_loss_fn(compiled_model, trie), fullgraph=True)

    start = time.perf_counter()
    loss_c = compiled_loss(input_ids, labels)
    loss_c.backward()
    compile_s = time.perf_counter() - start
    loss_e = eager_loss(input_ids, labels)
    loss_e.backward()
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-5)
    for (name, pc), pe in zip(
        compiled_model.named_parameters(), eager_model.parameters(), strict=True
    ):
        torch.testing.assert_close(pc.grad, pe.grad, rtol=1e-4, atol=1e-5, msg=name)
    compiled_model.zero_grad(set_to_none=True)
    eager_model.zero_grad(set_to_none=True)
    return CompileCase(
        eager_model, compiled_model, eager_loss, compiled_loss, input_ids, labels, compile_s
    )


def _step_fn(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    input_ids: torch.Tensor,
    labels: torch.Tensor,
) -> Callable[[], float]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(input_ids, labels)
        loss.backward()
        opt.step()
        return loss.detach().item()

    return step


@pytest.mark.benchmark(group="compile-step")
def test_train_step_eager(benchmark, ratios, case: CompileCase) -> None:
    step = _step_fn(case.eager_model, case.eager_loss, case.input_ids, case.labels)
    benchmark.pedantic(step, rounds=5 if QUICK else 10, warmup_rounds=1)
    ratios.record(case.group, "eager", benchmark, compile_s=case.compile_s)


@pytest.mark.benchmark(group="compile-step")
def test_train_step_compiled(benchmark, ratios, case: CompileCase) -> None:
    step = _step_fn(case.compiled_model, case.compiled_loss, case.input_ids, case.labels)
    benchmark.pedantic(step, rounds=5 if QUICK else 10, warmup_rounds=1)
    ratios.record(case.group, "igdbeam", benchmark, compile_s=case.compile_s)


def test_train_step_interleaved_ratio(ratios, case: CompileCase) -> None:
    """The two steps timed alternately (robust to load drift on a shared machine)."""
    steps = {
        "eager": _step_fn(case.eager_model, case.eager_loss, case.input_ids, case.labels),
        "igdbeam": _step_fn(case.compiled_model, case.compiled_loss, case.input_ids, case.labels),
    }
    losses = {role: step() for role, step in steps.items()}  # warm-up; same weights so far
    assert losses["igdbeam"] == pytest.approx(losses["eager"], rel=1e-3)
    times: dict[str, list[float]] = {role: [] for role in steps}
    for _ in range(10 if QUICK else 20):
        for role, step in steps.items():
            start = time.perf_counter()
            step()
            times[role].append(time.perf_counter() - start)
    for role, t in times.items():
        ratios.record_seconds(f"{case.group} alt", role, statistics.mean(t), min(t))
