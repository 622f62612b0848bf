"""Exact trainer losses and gradients: the loss of one batch, and the gradient it sends into the
logits, against the pure-Python reference (tests/oracles/loss.py) at fp32 tolerances. A wrong
weight, denominator or shift fails these, where the loss-goes-down tests of test_trainer.py would
still pass."""

from __future__ import annotations

import pytest
import torch

from factories.ids import EOS, PAD
from factories.training import (
    EXACT_SGD,
    VOCAB,
    ListDataset,
    completion_rows,
    shared_prefix_items,
    training_args,
    training_llama,
)
from oracles.loss import (
    IGNORE,
    reference_igd_loss,
    reference_igd_loss_grad,
    reference_igd_weights,
    reference_shift,
)
from oracles.trie import ReferenceTrie

transformers = pytest.importorskip("transformers")

from igdbeam import CompletionCollator, IGDTrainer, ItemTrie, make_compute_loss_func  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ITEMS = shared_prefix_items()

# Zeros are never-seen items: item 10 ([9, 11, 18, 2]) leaves item 11 ([9, 19, 25, 2]) all the
# weight of (9,), so the edge 9 -> 19 has zero IG although (9,) has two children.
POPULARITY = [3.0, 0.0, 1.0, 5.0, 2.0, 0.0, 1.0, 4.0, 1.0, 0.0, 0.0, 6.0]
GRAD_TOL = {"atol": 1e-8, "rtol": 1e-5}  # fp32 softmax on entries of about w / Omega / V


@pytest.fixture(scope="module")
def pop_trie() -> ItemTrie:
    return ItemTrie.from_token_ids(ITEMS, POPULARITY, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def pop_ref() -> ReferenceTrie:
    return ReferenceTrie(ITEMS, POPULARITY)


def exact_rows(n: int, seed: int) -> list[dict]:
    """Rows 0-2: the zero-IG edge 9 -> 19, the zero-weight item 10, a completion off the trie."""
    assert ITEMS[10][:2] == [9, 11] and ITEMS[11][:2] == [9, 19]
    rows = completion_rows(ITEMS, n, seed)
    rows[0]["completion_ids"] = ITEMS[11]
    rows[1]["completion_ids"] = ITEMS[10]
    rows[2]["completion_ids"] = rows[2]["completion_ids"][:-1] + [5, EOS]  # leaves the trie
    return rows


class LogitsRecorder:
    """Keeps the logits of every forward pass of ``model`` with their gradient retained."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.logits: list[torch.Tensor] = []
        self.handle = model.lm_head.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):  # noqa: ANN001, ANN202
        if output.requires_grad:
            output.retain_grad()
        self.logits.append(output)


def ref_lists(logits: torch.Tensor, labels: torch.Tensor) -> tuple[list, list]:
    """The logits as nested float64 lists and the labels as lists, for the reference."""
    return logits.detach().double().tolist(), labels.tolist()


def ref_omega(labels: list[list[int]], trie: ReferenceTrie, beta: float) -> float:
    """The reference Omega: the summed weight of the predicted completion tokens."""
    weights = reference_igd_weights(labels, trie, beta)
    return sum(
        w
        for row, ws in zip(reference_shift(labels), weights, strict=True)
        for tok, w in zip(row, ws, strict=True)
        if tok != IGNORE
    )


def ref_tokens(labels: list[list[int]]) -> int:
    """What transformers.Trainer passes as num_items_in_batch: the predicted completion tokens."""
    return sum(tok != IGNORE for row in reference_shift(labels) for tok in row)


def check_loss_and_grad(loss, logits, labels, trie, beta, num_items=None) -> None:  # noqa: ANN001
    z, y = ref_lists(logits, labels)
    want = reference_igd_loss(z, y, trie, beta, num_items_in_batch=num_items)
    torch.testing.assert_close(loss.detach(), torch.tensor(want, dtype=torch.float32))
    grad = reference_igd_loss_grad(z, y, trie, beta, num_items_in_batch=num_items)
    torch.testing.assert_close(logits.grad, torch.tensor(grad, dtype=torch.float32), **GRAD_TOL)


def test_igd_trainer_compute_loss_is_the_reference(tmp_path, pop_trie, pop_ref) -> None:
    """IGDTrainer.compute_loss on one batch: the reference loss (Omega of the micro-batch, or of
    the step it is part of) and the reference gradient, and beta changes that gradient."""
    rows = exact_rows(6, seed=11)
    batch = CompletionCollator(PAD)(rows[:3])
    other = CompletionCollator(PAD)(rows[3:])
    grads = {}
    for beta in (0.1, 0.6):
        model = training_llama(3, kv_heads=4)
        trainer = IGDTrainer(
            model=model,
            args=training_args(tmp_path),
            data_collator=CompletionCollator(PAD),
            trie=pop_trie,
            beta=beta,
        )
        rec = LogitsRecorder(model)
        step_den = trainer._get_num_items_in_batch([batch, other], torch.device("cpu"))
        omega = ref_omega(batch["labels"].tolist() + other["labels"].tolist(), pop_ref, beta)
        torch.testing.assert_close(step_den, torch.tensor(omega, dtype=torch.float32))
        own_den = trainer._get_num_items_in_batch([batch], torch.device("cpu"))
        # no denominator, or a step of this batch alone: the micro-batch's own Omega
        for n, ref_n in ((None, None), (own_den, None), (step_den, omega)):
            model.zero_grad()
            loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n)
            loss.backward()
            check_loss_and_grad(loss, rec.logits[-1], batch["labels"], pop_ref, beta, ref_n)
        grads[beta] = (rec.logits[-1].grad.clone(), model.lm_head.weight.grad.clone())
        rec.handle.remove()
    # Zero-IG and off-trie tokens weigh beta, the others 1: beta changes the gradient.
    (z1, w1), (z6, w6) = grads[0.1], grads[0.6]
    assert (z1 - z6).abs().max() > 1e-3 and (w1 - w6).abs().max() > 1e-3 * w1.abs().max()


def test_stock_trainer_compute_loss_is_the_reference(tmp_path, pop_trie, pop_ref) -> None:
    """A stock transformers.Trainer with make_compute_loss_func: sum w CE / num_items_in_batch
    with the Trainer's own token count of the step, or the micro-batch Omega without it."""
    rows = exact_rows(6, seed=12)
    batch = CompletionCollator(PAD)(rows[:3])
    other = CompletionCollator(PAD)(rows[3:])
    for beta in (0.1, 0.6):
        model = training_llama(4, kv_heads=4)
        trainer = transformers.Trainer(
            model=model,
            args=training_args(tmp_path),
            data_collator=CompletionCollator(PAD),
            compute_loss_func=make_compute_loss_func(pop_trie, beta),
        )
        rec = LogitsRecorder(model)
        step_n = trainer._get_num_items_in_batch([batch, other], torch.device("cpu"))
        assert int(step_n) == ref_tokens(batch["labels"].tolist() + other["labels"].tolist())
        for n, ref_n in ((None, None), (step_n, int(step_n))):
            model.zero_grad()
            loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n)
            loss.backward()
            check_loss_and_grad(loss, rec.logits[-1], batch["labels"], pop_ref, beta, ref_n)
        rec.handle.remove()


class _RecordingMixin:
    """Records (labels, loss, num_items_in_batch) of every compute_loss call of a trainer."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001, ANN201
        labels = inputs["labels"].clone()
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self.recorded.append((labels, loss.detach().clone(), num_items_in_batch))
        return loss


class RecordingIGDTrainer(_RecordingMixin, IGDTrainer):
    recorded: list


class RecordingTrainer(_RecordingMixin, transformers.Trainer):
    recorded: list


@pytest.mark.parametrize("kind", ["igd_trainer", "stock"])
def test_accumulated_step_is_the_reference(tmp_path, pop_trie, pop_ref, kind) -> None:
    """One optimizer step of trainer.train() over 6 rows in 3 micro-batches of 2 (gradient
    accumulation): every micro-batch's loss and logits gradient are the reference's with the
    step's denominator (IGDTrainer: Omega of the step, so the micro-batch losses add up to the
    reference loss of the whole step; stock Trainer: its count of completion tokens), and the
    parameter update is the accumulated gradient."""
    beta = 0.2
    rows = exact_rows(6, seed=13)
    model = training_llama(5, kv_heads=4)
    start = [p.detach().clone() for p in model.parameters()]
    args = training_args(
        tmp_path,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=3,
        max_steps=1,
        learning_rate=1.0,
        **EXACT_SGD,
    )
    common = dict(model=model, args=args, train_dataset=ListDataset(rows),
                  data_collator=CompletionCollator(PAD))  # fmt: skip
    if kind == "igd_trainer":
        trainer = RecordingIGDTrainer(**common, trie=pop_trie, beta=beta)
    else:
        trainer = RecordingTrainer(
            **common, compute_loss_func=make_compute_loss_func(pop_trie, beta)
        )
    trainer.recorded = []
    rec = LogitsRecorder(model)
    params = list(model.parameters())
    summed = [torch.zeros_like(p) for p in params]

    def accumulate(k: int):  # noqa: ANN202
        def hook(g: torch.Tensor) -> None:
            summed[k] += g.detach()

        return hook

    hooks = [p.register_hook(accumulate(k)) for k, p in enumerate(params)]
    trainer.train()
    for h in hooks:
        h.remove()
    rec.handle.remove()
    assert len(trainer.recorded) == 3 == len(rec.logits)
    all_labels = [row for labels, _, _ in trainer.recorded for row in labels.tolist()]
    completions = sorted(tuple(t for t in r if t != IGNORE) for r in all_labels)
    assert completions == sorted(tuple(r["completion_ids"]) for r in rows)  # each row once
    if kind == "igd_trainer":
        den = ref_omega(all_labels, pop_ref, beta)
        all_logits = [row for z in rec.logits for row in z.detach().double().tolist()]
        total = sum(loss for _, loss, _ in trainer.recorded)
        want = reference_igd_loss(all_logits, all_labels, pop_ref, beta)  # the whole step
        torch.testing.assert_close(total, torch.tensor(want, dtype=torch.float32))
    else:
        den = ref_tokens(all_labels)
    for (labels, loss, n), logits in zip(trainer.recorded, rec.logits, strict=True):
        torch.testing.assert_close(
            torch.as_tensor(n, dtype=torch.float32), torch.tensor(float(den))
        )
        check_loss_and_grad(loss, logits, labels, pop_ref, beta, den)
    # SGD with lr 1 and no clipping: the update is minus the gradient summed over the
    # micro-batches (no further division by the accumulation steps).
    for p, p0, g in zip(params, start, summed, strict=True):
        torch.testing.assert_close(p.detach() - p0, -g, atol=1e-6, rtol=1e-4)
    assert max(g.abs().max() for g in summed) > 1e-3
