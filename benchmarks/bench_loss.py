"""Benchmarks of the IGD training half: the weight op, and a training step with / without IGD.

Run: ``PYTHONPATH=python python -m pytest benchmarks/bench_loss.py`` (``IGDBEAM_BENCH_QUICK=1``
for the small CI sizes). Every benchmark checks correctness before timing; the last section of
the output is a table of baseline vs ours with the ratio.

* ``weights``: ``label_token_weights`` (native op) against a Python per-row dict walk in the style
  of the public reference trainer, on a realistic 16 x 512 label batch.
* ``train-step``: one SGD step (forward, loss, backward, update) of a small Llama with the model's
  own token-mean cross-entropy against the same step with ``igd_loss``; also timed alternately
  ("alt" row), which is robust to load drift on a shared machine.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict

import pytest
import torch

from igdbeam import ItemTrie, igd_loss, label_token_weights

QUICK = os.environ.get("IGDBEAM_BENCH_QUICK", "0") not in ("", "0")
RESULTS: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
IGNORE = -100
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _stats(benchmark) -> tuple[float, float]:  # noqa: ANN001 - pytest-benchmark fixture
    """(min, median) seconds of a finished benchmark (min is the most robust under load)."""
    return benchmark.stats.stats.min, benchmark.stats.stats.median


def _catalog(num_items: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """Item paths of 4-12 tokens with shared title prefixes (like tokenized titles), EOS 2."""
    rng = random.Random(seed)
    heads = [tuple(rng.randrange(3, vocab) for _ in range(rng.randint(1, 3))) for _ in range(300)]
    items: set[tuple[int, ...]] = set()
    while len(items) < num_items:
        tail = tuple(rng.randrange(3, vocab) for _ in range(rng.randint(2, 9)))
        items.add(rng.choice(heads) + tail + (2,))
    return [list(p) for p in sorted(items)]


def _label_batch(items: list[list[int]], rows: int, cols: int, seed: int = 1) -> torch.Tensor:
    """Right-padded SFT labels: a long prompt (-100), the item path, padding (-100)."""
    rng = random.Random(seed)
    labels = torch.full((rows, cols), IGNORE, dtype=torch.int64)
    for r in range(rows):
        path = rng.choice(items)
        end = rng.randint(cols * 3 // 4, cols)
        labels[r, end - len(path) : end] = torch.tensor(path)
    return labels


def _python_trie(trie: ItemTrie) -> dict:
    """Nested dicts token -> (children, zero_ig), as the reference trainer keeps its trie."""
    off = trie.child_offsets.tolist()
    tok = trie.token.tolist()
    zero = trie.zero_ig.tolist()
    nodes: list[dict] = [{} for _ in range(trie.num_nodes)]
    for n in range(trie.num_nodes):
        for c in range(off[n], off[n + 1]):
            nodes[n][tok[c]] = (nodes[c], bool(zero[c]))
    return nodes[0]


def python_row_walk(root: dict, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-row Python walk of the completion from the root (the reference code's approach)."""
    out = []
    for row in labels.tolist():
        node = root
        weights = []
        left = False
        for t in row:
            if t == IGNORE:
                weights.append(0.0)
                continue
            hit = None if left else node.get(t)
            if hit is None:
                left = True
                weights.append(beta)
                continue
            node, zero = hit
            weights.append(beta if zero else 1.0)
        if left:
            weights = [0.0 if t == IGNORE else beta for t in row]
        out.append(weights)
    return torch.tensor(out, dtype=torch.float32)


@pytest.fixture(scope="module")
def weights_case():
    vocab = 32000
    items = _catalog(2000 if QUICK else 20000, vocab)
    trie = ItemTrie.from_token_ids(items, vocab_size=vocab)
    rows, cols = (4, 128) if QUICK else (16, 512)
    return trie, _label_batch(items, rows, cols), _python_trie(trie)


@pytest.mark.benchmark(group="weights")
def test_weights_python_walk(benchmark, weights_case) -> None:
    trie, labels, root = weights_case
    expected = label_token_weights(labels, trie, 0.1).weight
    assert torch.equal(python_row_walk(root, labels, 0.1), expected)
    benchmark(python_row_walk, root, labels, 0.1)
    RESULTS[f"weights {tuple(labels.shape)}"]["baseline"] = _stats(benchmark)


@pytest.mark.benchmark(group="weights")
def test_weights_native(benchmark, weights_case) -> None:
    trie, labels, root = weights_case
    assert torch.equal(
        label_token_weights(labels, trie, 0.1).weight, python_row_walk(root, labels, 0.1)
    )
    benchmark(label_token_weights, labels, trie, 0.1)
    RESULTS[f"weights {tuple(labels.shape)}"]["ours"] = _stats(benchmark)


def _llama(vocab: int):
    import transformers

    torch.manual_seed(0)
    hidden, layers = (64, 2) if QUICK else (128, 2)
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=hidden * 4,
        max_position_embeddings=1024,
    )
    return transformers.LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def step_case():
    vocab = 1024 if QUICK else 4096
    rows, cols = (4, 64) if QUICK else (8, 128)
    items = _catalog(2000, vocab, seed=2)
    trie = ItemTrie.from_token_ids(items, vocab_size=vocab)
    labels = _label_batch(items, rows, cols, seed=3)
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, vocab, (rows, cols), generator=g)
    input_ids = torch.where(labels != IGNORE, labels, input_ids)
    return trie, input_ids, labels


def _step_fn(model, input_ids, labels, trie, use_igd: bool):
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        if use_igd:
            logits = model(input_ids=input_ids).logits
            loss = igd_loss(logits, labels, trie, 0.1)
        else:
            loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        opt.step()
        return float(loss)

    return step


def _check_step_losses(trie, input_ids, labels) -> None:
    model = _llama(trie.vocab_size)
    with torch.no_grad():
        out = model(input_ids=input_ids, labels=labels)
        same = igd_loss(out.logits, labels, trie, 1.0)
    torch.testing.assert_close(same, out.loss, atol=1e-5, rtol=1e-5)


@pytest.mark.benchmark(group="train-step")
def test_train_step_plain_ce(benchmark, step_case) -> None:
    trie, input_ids, labels = step_case
    _check_step_losses(trie, input_ids, labels)
    step = _step_fn(_llama(trie.vocab_size), input_ids, labels, trie, use_igd=False)
    benchmark.pedantic(step, rounds=5 if QUICK else 10, warmup_rounds=1)
    RESULTS[f"train step {tuple(labels.shape)}"]["baseline"] = _stats(benchmark)


@pytest.mark.benchmark(group="train-step")
def test_train_step_igd(benchmark, step_case) -> None:
    trie, input_ids, labels = step_case
    _check_step_losses(trie, input_ids, labels)
    step = _step_fn(_llama(trie.vocab_size), input_ids, labels, trie, use_igd=True)
    benchmark.pedantic(step, rounds=5 if QUICK else 10, warmup_rounds=1)
    RESULTS[f"train step {tuple(labels.shape)}"]["ours"] = _stats(benchmark)


def test_train_step_interleaved_ratio(step_case) -> None:
    """The same two steps timed alternately (robust to load drift on a shared machine)."""
    import statistics
    import time

    trie, input_ids, labels = step_case
    steps = {
        name: _step_fn(_llama(trie.vocab_size), input_ids, labels, trie, use_igd=name == "ours")
        for name in ("baseline", "ours")
    }
    times: dict[str, list[float]] = {"baseline": [], "ours": []}
    for step in steps.values():  # warm-up
        step()
    for _ in range(5 if QUICK else 10):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    RESULTS[f"train step {tuple(labels.shape)} alt"] = {
        name: (min(t), statistics.median(t)) for name, t in times.items()
    }


@pytest.fixture(scope="module")
def loss_case(step_case):
    trie, input_ids, labels = step_case
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(*labels.shape, trie.vocab_size, generator=g).requires_grad_()
    return trie, logits, labels


def _hf_loss_step(logits, labels) -> None:
    from transformers.loss.loss_utils import ForCausalLMLoss

    logits.grad = None
    ForCausalLMLoss(logits, labels, logits.shape[-1]).backward()


def _igd_loss_step(logits, labels, trie) -> None:
    logits.grad = None
    igd_loss(logits, labels, trie, 0.1).backward()


@pytest.mark.benchmark(group="loss")
def test_loss_transformers_ce(benchmark, loss_case) -> None:
    """The loss alone (forward + backward on fixed logits): transformers' causal-LM loss."""
    trie, logits, labels = loss_case
    from transformers.loss.loss_utils import ForCausalLMLoss

    with torch.no_grad():
        torch.testing.assert_close(
            ForCausalLMLoss(logits, labels, logits.shape[-1]), igd_loss(logits, labels, trie, 1.0)
        )
    benchmark.pedantic(_hf_loss_step, (logits, labels), rounds=20, warmup_rounds=2)
    RESULTS[f"loss fwd+bwd {tuple(logits.shape)}"]["baseline"] = _stats(benchmark)


@pytest.mark.benchmark(group="loss")
def test_loss_igd(benchmark, loss_case) -> None:
    """The loss alone (forward + backward on fixed logits): igd_loss."""
    trie, logits, labels = loss_case
    benchmark.pedantic(_igd_loss_step, (logits, labels, trie), rounds=20, warmup_rounds=2)
    RESULTS[f"loss fwd+bwd {tuple(logits.shape)}"]["ours"] = _stats(benchmark)
