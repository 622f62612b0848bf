"""Benchmarks of the IGD training half: the weight op, and a training step with / without IGD.

Run: ``PYTHONPATH=python python -m pytest benchmarks/bench_loss.py`` (``IGDBEAM_BENCH_QUICK=1``
for the small CI sizes). Every benchmark checks correctness before timing and records its
timing in the ratio book (benchmarks/conftest.py), whose table ends the run.

* ``weights``: ``label_token_weights`` (native op) against a Python per-row dict walk in the style
  of the public reference trainer, on a realistic 16 x 512 label batch.
* ``train-step``: one SGD step (forward, loss, backward, update) of a small Llama with the model's
  own token-mean cross-entropy against the same step with ``igd_loss``; also timed alternately
  ("alt" row), which is robust to load drift on a shared machine.
* ``trainer step``: one optimizer step of ``transformers.Trainer`` (2 accumulated micro-batches:
  the step's denominator, then ``training_step`` per micro-batch, then SGD) with the model's own
  cross-entropy against :class:`igdbeam.IGDTrainer` (one label-weights call per micro-batch, for
  the denominator, reused by the loss), timed alternately. The IGD overhead of a step is then
  taken from its two extra parts timed alone, the denominator and the loss (fwd + bwd on fixed
  logits), over the plain step: ``trainer_overhead_step_pct`` (goal: under 1%).
"""

from __future__ import annotations

import random

import pytest
import torch

from benchmarks.conftest import QUICK
from factories.catalogs import synthetic_catalog
from factories.models import tiny_llama
from igdbeam import ItemTrie, igd_loss, label_token_weights
from igdbeam.training.trainer import WEIGHTS_KEY

IGNORE = -100
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _catalog(num_items: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """Distinct item paths of 3-12 tokens below 300 first tokens (like tokenized titles), EOS."""
    return synthetic_catalog(
        num_items, vocab, seed=seed, min_len=3, max_len=12, heads=300, alphabet=None
    ).paths()


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
def test_weights_python_walk(benchmark, ratios, weights_case) -> None:
    trie, labels, root = weights_case
    expected = label_token_weights(labels, trie, 0.1).weight
    assert torch.equal(python_row_walk(root, labels, 0.1), expected)
    benchmark(python_row_walk, root, labels, 0.1)
    ratios.record(f"weights {tuple(labels.shape)}", "python_walk", benchmark)


@pytest.mark.benchmark(group="weights")
def test_weights_native(benchmark, ratios, weights_case) -> None:
    trie, labels, root = weights_case
    assert torch.equal(
        label_token_weights(labels, trie, 0.1).weight, python_row_walk(root, labels, 0.1)
    )
    benchmark(label_token_weights, labels, trie, 0.1)
    ratios.record(f"weights {tuple(labels.shape)}", "igdbeam", benchmark)


def _llama(vocab: int):
    """A random 2-layer Llama (hidden 64 in quick mode, else 128) in training mode."""
    hidden = 64 if QUICK else 128
    return tiny_llama(
        vocab, sharpen=None, hidden=hidden, intermediate=4 * hidden, kv_heads=4, max_positions=1024
    ).train()


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
def test_train_step_plain_ce(benchmark, ratios, step_case) -> None:
    trie, input_ids, labels = step_case
    _check_step_losses(trie, input_ids, labels)
    step = _step_fn(_llama(trie.vocab_size), input_ids, labels, trie, use_igd=False)
    benchmark.pedantic(step, rounds=5 if QUICK else 10, warmup_rounds=1)
    ratios.record(f"train step {tuple(labels.shape)}", "plain_ce", benchmark)


@pytest.mark.benchmark(group="train-step")
def test_train_step_igd(benchmark, ratios, step_case) -> None:
    trie, input_ids, labels = step_case
    _check_step_losses(trie, input_ids, labels)
    step = _step_fn(_llama(trie.vocab_size), input_ids, labels, trie, use_igd=True)
    benchmark.pedantic(step, rounds=5 if QUICK else 10, warmup_rounds=1)
    ratios.record(f"train step {tuple(labels.shape)}", "igdbeam", benchmark)


def test_train_step_interleaved_ratio(ratios, step_case) -> None:
    """The same two steps timed alternately (robust to load drift on a shared machine)."""
    import statistics
    import time

    trie, input_ids, labels = step_case
    steps = {
        role: _step_fn(_llama(trie.vocab_size), input_ids, labels, trie, use_igd=role == "igdbeam")
        for role in ("plain_ce", "igdbeam")
    }
    times: dict[str, list[float]] = {role: [] for role in steps}
    for step in steps.values():  # warm-up
        step()
    for _ in range(5 if QUICK else 10):
        for role, step in steps.items():
            start = time.perf_counter()
            step()
            times[role].append(time.perf_counter() - start)
    for role, t in times.items():
        group = f"train step {tuple(labels.shape)} alt"
        ratios.record_seconds(group, role, statistics.mean(t), min(t))


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
def test_loss_transformers_ce(benchmark, ratios, loss_case) -> None:
    """The loss alone (forward + backward on fixed logits): transformers' causal-LM loss."""
    trie, logits, labels = loss_case
    from transformers.loss.loss_utils import ForCausalLMLoss

    with torch.no_grad():
        torch.testing.assert_close(
            ForCausalLMLoss(logits, labels, logits.shape[-1]), igd_loss(logits, labels, trie, 1.0)
        )
    benchmark.pedantic(_hf_loss_step, (logits, labels), rounds=20, warmup_rounds=2)
    ratios.record(f"loss fwd+bwd {tuple(logits.shape)}", "transformers_ce", benchmark)


@pytest.mark.benchmark(group="loss")
def test_loss_igd(benchmark, ratios, loss_case) -> None:
    """The loss alone (forward + backward on fixed logits): igd_loss."""
    trie, logits, labels = loss_case
    benchmark.pedantic(_igd_loss_step, (logits, labels, trie), rounds=20, warmup_rounds=2)
    ratios.record(f"loss fwd+bwd {tuple(logits.shape)}", "igdbeam", benchmark)


def test_zz_igd_overhead(ratios) -> None:
    """The IGD overhead of a training step, from the two losses alone over the plain step time
    (stable under load, unlike the difference of two noisy step times): a fact of the loss
    group in the report."""
    losses = [g for g, r in ratios.times.items() if {"igdbeam", "transformers_ce"} <= r.keys()]
    steps = [r["plain_ce"].best for r in ratios.times.values() if "plain_ce" in r]
    if not losses or not steps:
        pytest.skip("run the loss and train-step benchmarks first")
    loss = ratios.times[losses[0]]
    extra = loss["igdbeam"].best - loss["transformers_ce"].best
    step = min(steps)  # the fastest plain step seen: a conservative (larger) percentage
    ratios.note(
        losses[0],
        igd_overhead_ms=extra * 1e3,
        plain_step_ms=step * 1e3,
        igd_overhead_step_pct=100 * extra / step,
    )


# ---------------------------------------------------------------- the Trainer's optimizer step
def _trainers(trie, tmp_path_factory, beta: float):
    """A stock Trainer (the model's own CE) and an IGDTrainer over identical models: micro-batches
    of half the rows, 2 accumulation steps, SGD."""
    import transformers

    from factories.training import training_args
    from igdbeam import IGDTrainer

    out = tmp_path_factory.mktemp("trainer-step")
    args = training_args(
        out, per_device_train_batch_size=4, gradient_accumulation_steps=2, optim="sgd",
        learning_rate=1e-4, max_grad_norm=0.0, lr_scheduler_type="constant",
    )  # fmt: skip
    stock = transformers.Trainer(model=_llama(trie.vocab_size), args=args)
    igd = IGDTrainer(model=_llama(trie.vocab_size), args=args, trie=trie, beta=beta)
    for trainer in (stock, igd):
        trainer.create_optimizer_and_scheduler(num_training_steps=1000)
        trainer.current_gradient_accumulation_steps = 2
    return stock, igd


def _micro_batches(input_ids, labels) -> list[dict[str, torch.Tensor]]:
    half = labels.shape[0] // 2
    return [
        {"input_ids": input_ids[s], "attention_mask": torch.ones_like(input_ids[s]),
         "labels": labels[s]}
        for s in (slice(0, half), slice(half, None))
    ]  # fmt: skip


def _optimizer_step(trainer, batches):
    """One optimizer step as Trainer's loop runs it; returns the step's summed loss."""

    def step() -> float:
        samples = [dict(b) for b in batches]  # fresh batch dicts, as the dataloader yields
        n = trainer._get_num_items_in_batch(samples, trainer.args.device)
        loss = sum(float(trainer.training_step(trainer.model, b, n)) for b in samples)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        return loss

    return step


@pytest.fixture(scope="module")
def trainer_case(step_case, tmp_path_factory):
    trie, input_ids, labels = step_case
    batches = _micro_batches(input_ids, labels)
    # correctness first: at beta = 1 IGDTrainer's step is the model's own CE step
    stock, igd_one = _trainers(trie, tmp_path_factory, beta=1.0)
    for _ in range(2):
        a, b = _optimizer_step(stock, batches)(), _optimizer_step(igd_one, batches)()
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (a, b)
    for p, q in zip(stock.model.parameters(), igd_one.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
    stock, igd = _trainers(trie, tmp_path_factory, beta=0.1)
    return trie, batches, stock, igd


def test_trainer_step_interleaved(ratios, trainer_case) -> None:
    """A Trainer optimizer step with the model's CE and with IGDTrainer, timed alternately."""
    import statistics
    import time

    trie, batches, stock, igd = trainer_case
    steps = {"plain_ce": _optimizer_step(stock, batches), "igdbeam": _optimizer_step(igd, batches)}
    times: dict[str, list[float]] = {role: [] for role in steps}
    for step in steps.values():  # warm-up
        step()
    for _ in range(5 if QUICK else 15):
        for role, step in steps.items():
            start = time.perf_counter()
            step()
            times[role].append(time.perf_counter() - start)
    shape = tuple(batches[0]["labels"].shape)
    for role, t in times.items():
        ratios.record_seconds(f"trainer step 2 x {shape}", role, statistics.mean(t), min(t))


def _best_of(fn, rounds: int) -> float:
    import time

    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def test_zz_trainer_overhead(ratios, trainer_case) -> None:
    """IGDTrainer's extra work in one optimizer step, timed part by part (stable under load,
    unlike the difference of two noisy step times), over the fastest plain Trainer step:
    the step's denominator (IGD weights of both micro-batches against transformers' token count)
    and the loss of each micro-batch (IGD loss on the reused weights against transformers'
    causal-LM loss, forward + backward on fixed logits)."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    trie, batches, stock, igd = trainer_case
    group = f"trainer step 2 x {tuple(batches[0]['labels'].shape)}"
    if group not in ratios.times:
        pytest.skip("run test_trainer_step_interleaved first")
    rounds = 10 if QUICK else 30
    device = igd.args.device
    den_igd = _best_of(
        lambda: igd._get_num_items_in_batch([dict(b) for b in batches], device), rounds
    )
    den_hf = _best_of(
        lambda: stock._get_num_items_in_batch([dict(b) for b in batches], device), rounds
    )
    g = torch.Generator().manual_seed(2)
    labels = batches[0]["labels"]
    logits = torch.randn(*labels.shape, trie.vocab_size, generator=g).requires_grad_()
    n = stock._get_num_items_in_batch([dict(b) for b in batches], device)
    samples = [dict(b) for b in batches]
    n_igd = igd._get_num_items_in_batch(samples, device)
    weights = samples[0][WEIGHTS_KEY]
    func = igd.igd_loss_func

    def igd_loss_step() -> None:
        logits.grad = None
        func({"logits": logits}, labels, n_igd, weights=weights).backward()

    def hf_loss_step() -> None:
        logits.grad = None
        ForCausalLMLoss(logits, labels, logits.shape[-1], num_items_in_batch=n).backward()

    loss_igd = _best_of(igd_loss_step, rounds)
    loss_hf = _best_of(hf_loss_step, rounds)
    extra = (den_igd - den_hf) + len(batches) * (loss_igd - loss_hf)
    step = ratios.times[group]["plain_ce"].best
    ratios.note(
        group,
        denominator_extra_ms=(den_igd - den_hf) * 1e3,
        loss_extra_ms_per_micro_batch=(loss_igd - loss_hf) * 1e3,
        trainer_overhead_ms=extra * 1e3,
        plain_trainer_step_ms=step * 1e3,
        trainer_overhead_step_pct=100 * extra / step,
    )
