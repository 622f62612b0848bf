"""Trainer integration: a tiny random Llama trained with each loss, accumulation invariance, and
the evaluation-time zero-IG / positive-IG losses."""

from __future__ import annotations

import random

import pytest
import torch

from oracles.loss import (
    IGNORE,
    reference_igd_loss,
    reference_igd_loss_grad,
    reference_igd_weights,
    reference_shift,
)
from oracles.trie import ReferenceTrie

transformers = pytest.importorskip("transformers")

from igdbeam import (  # noqa: E402
    CFTCollator,
    CompletionCollator,
    IGDTrainer,
    ItemTrie,
    label_token_weights,
    make_compute_loss_func,
)
from igdbeam.training.loss import shift_labels  # noqa: E402

VOCAB = 48
PAD, EOS = 0, 2
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class ListDataset(torch.utils.data.Dataset):
    """A list of feature dicts."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def make_items(seed: int = 0) -> list[list[int]]:
    """Twelve item paths with shared prefixes (so some edges have zero IG), EOS-terminated."""
    rng = random.Random(seed)
    items: set[tuple[int, ...]] = set()
    while len(items) < 12:
        head = rng.choice([(3, 4), (5,), (6, 7, 8), (9,)])
        tail = tuple(rng.randrange(10, 30) for _ in range(rng.randint(1, 3)))
        items.add(head + tail + (EOS,))
    return [list(p) for p in sorted(items)]


def make_rows(items: list[list[int]], n: int, seed: int) -> list[dict]:
    """Prompts = a history of item-ish tokens + a user token that determines the target."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randrange(len(items))
        history = [rng.randrange(30, 40) for _ in range(rng.randint(2, 5))]
        user = [40 + k % 8]
        rows.append(
            {
                "prompt_ids": [1] + history + user,
                "completion_ids": items[k],
                "cf_prompt_ids": [1] + user,
            }
        )
    return rows


def tiny_llama(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=EOS,
    )
    return transformers.LlamaForCausalLM(config)


def train_args(tmp_path, **kw) -> transformers.TrainingArguments:
    base = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "learning_rate": 5e-3,
        "max_steps": 30,
        "report_to": [],
        "save_strategy": "no",
        "logging_strategy": "no",
        "eval_strategy": "no",
        "use_cpu": True,
        "remove_unused_columns": False,
        "disable_tqdm": True,
        "dataloader_pin_memory": False,
        "seed": 0,
    }
    base.update(kw)
    return transformers.TrainingArguments(**base)


@pytest.fixture(scope="module")
def items() -> list[list[int]]:
    return make_items()


@pytest.fixture(scope="module")
def trie(items) -> ItemTrie:
    return ItemTrie.from_token_ids(items, vocab_size=VOCAB)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["igd", "pos", "ce", "cft"])
def test_igd_trainer_loss_goes_down(tmp_path, items, trie, loss: str) -> None:
    train = ListDataset(make_rows(items, 16, seed=1))
    collator = CFTCollator(PAD) if loss == "cft" else CompletionCollator(PAD)
    trainer = IGDTrainer(
        model=tiny_llama(),
        args=train_args(tmp_path),
        train_dataset=train,
        eval_dataset=train,
        data_collator=collator,
        trie=trie,
        beta=0.1,
        loss=loss,
        alpha=0.3,
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < 0.7 * before["eval_loss"], (before, after)
    for m in (before, after):
        assert m["eval_loss_zero_ig"] > 0 and m["eval_loss_pos_ig"] > 0
        assert 0 < m["eval_zero_ig_token_share"] < 1


def test_stock_trainer_with_compute_loss_func(tmp_path, items, trie) -> None:
    train = ListDataset(make_rows(items, 16, seed=2))
    trainer = transformers.Trainer(
        model=tiny_llama(),
        args=train_args(tmp_path, max_steps=20),
        train_dataset=train,
        eval_dataset=train,
        data_collator=CompletionCollator(PAD),
        compute_loss_func=make_compute_loss_func(trie, 0.1),
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    assert trainer.evaluate()["eval_loss"] < 0.7 * before


def test_eval_zero_and_positive_ig_losses(tmp_path, items, trie) -> None:
    """The logged means equal a direct computation over the evaluation set."""
    rows = make_rows(items, 10, seed=3)
    model = tiny_llama(1)
    trainer = IGDTrainer(
        model=model,
        args=train_args(tmp_path, per_device_eval_batch_size=4),
        eval_dataset=ListDataset(rows),
        data_collator=CompletionCollator(PAD),
        trie=trie,
        beta=0.1,
    )
    metrics = trainer.evaluate(metric_key_prefix="val")
    zero_sum = zero_n = pos_sum = pos_n = 0.0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), 4):
            batch = CompletionCollator(PAD)(rows[i : i + 4])
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            target = shift_labels(batch["labels"])
            ce = torch.nn.functional.cross_entropy(
                logits.logits.transpose(1, 2), target, reduction="none"
            )
            z = label_token_weights(target, trie, 1.0).zero_ig
            m = target != IGNORE
            zero_sum += ce[m & z].sum().item()
            zero_n += (m & z).sum().item()
            pos_sum += ce[m & ~z].sum().item()
            pos_n += (m & ~z).sum().item()
    assert zero_n > 0 and pos_n > 0
    assert metrics["val_loss_zero_ig"] == pytest.approx(zero_sum / zero_n, rel=1e-4)
    assert metrics["val_loss_pos_ig"] == pytest.approx(pos_sum / pos_n, rel=1e-4)
    assert metrics["val_zero_ig_token_share"] == pytest.approx(zero_n / (zero_n + pos_n))


def _one_step_update(tmp_path, rows, ga: int, bs: int, make_trainer) -> torch.Tensor:
    """Parameter change of one SGD step (lr 1) over all rows, split into `ga` micro-batches."""
    model = tiny_llama(2)
    start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    args = train_args(
        tmp_path,
        per_device_train_batch_size=bs,
        gradient_accumulation_steps=ga,
        max_steps=1,
        learning_rate=1.0,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        warmup_steps=0,
    )
    trainer = make_trainer(model, args, ListDataset(rows))
    trainer.train()
    end = torch.cat([p.detach().flatten() for p in model.parameters()])
    return end - start


@pytest.mark.slow
def test_accumulation_invariance(tmp_path, items, trie) -> None:
    """One optimizer step over 4 rows: the same update with 1, 2 or 4 micro-batches."""
    rows = make_rows(items, 4, seed=4)  # rows of different lengths: padding differs per split

    def igd_trainer(model, args, data):
        return IGDTrainer(
            model=model,
            args=args,
            train_dataset=data,
            data_collator=CompletionCollator(PAD),
            trie=trie,
            beta=0.1,
        )

    def stock_trainer(loss_func):
        def build(model, args, data):
            return transformers.Trainer(
                model=model,
                args=args,
                train_dataset=data,
                data_collator=CompletionCollator(PAD),
                compute_loss_func=loss_func,
            )

        return build

    ours = make_compute_loss_func(trie, 0.1)
    for build in (igd_trainer, stock_trainer(ours)):
        full = _one_step_update(tmp_path, rows, 1, 4, build)
        assert full.abs().max() > 1e-4
        for ga, bs in ((2, 2), (4, 1)):
            split = _one_step_update(tmp_path, rows, ga, bs, build)
            torch.testing.assert_close(split, full, atol=2e-6, rtol=1e-4)

    # The reference trainer's bug: a loss normalised per micro-batch, ignoring
    # num_items_in_batch, makes the update grow with the number of accumulation steps.
    def per_micro_batch(outputs, labels, num_items_in_batch=None):
        return ours(outputs, labels, None)

    full = _one_step_update(tmp_path, rows, 1, 4, stock_trainer(per_micro_batch))
    split = _one_step_update(tmp_path, rows, 4, 1, stock_trainer(per_micro_batch))
    assert split.norm() > 2 * full.norm()


def test_igd_weights_normalisation_is_the_step_reference_loss(tmp_path, items, trie) -> None:
    """IGDTrainer's denominator over a step is the weight sum of the whole step (Omega)."""
    rows = make_rows(items, 4, seed=5)
    trainer = IGDTrainer(
        model=tiny_llama(),
        args=train_args(tmp_path),
        data_collator=CompletionCollator(PAD),
        trie=trie,
        beta=0.1,
    )
    batches = [CompletionCollator(PAD)(rows[:2]), CompletionCollator(PAD)(rows[2:])]
    den = trainer._get_num_items_in_batch(batches, torch.device("cpu"))
    expected = sum(
        label_token_weights(shift_labels(b["labels"]), trie, 0.1).weight.sum() for b in batches
    )
    torch.testing.assert_close(torch.as_tensor(den, dtype=torch.float32), expected)


def test_trainer_bad_arguments(tmp_path, trie) -> None:
    with pytest.raises(ValueError, match="loss must be one of"):
        IGDTrainer(model=tiny_llama(), args=train_args(tmp_path), trie=trie, loss="focal")
    with pytest.raises(ValueError, match="needs a trie"):
        IGDTrainer(model=tiny_llama(), args=train_args(tmp_path), loss="igd")
    with pytest.raises(ValueError, match="beta"):
        make_compute_loss_func(trie, 3.0)
    with pytest.raises(ValueError, match="cft"):
        make_compute_loss_func(trie, 0.1, loss="cft")


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="t0", bos_token="t1", eos_token="t2", unk_token="t3"
    )


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["igd", "pos"])
def test_igd_sft_trainer(tmp_path, items, trie, loss: str) -> None:
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from igdbeam.training.trainer import _has_fused_head, igd_sft_trainer_class

    rows = make_rows(items, 16, seed=6)
    data = datasets.Dataset.from_list(
        [{"prompt_ids": r["prompt_ids"], "completion_ids": r["completion_ids"]} for r in rows]
    )
    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        max_steps=30,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        remove_unused_columns=False,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
    )
    from igdbeam import IGDSFTTrainer

    trainer = IGDSFTTrainer(
        model=tiny_llama(),
        args=args,
        train_dataset=data,
        eval_dataset=data,
        processing_class=_tiny_tokenizer(),
        data_collator=CompletionCollator(PAD),
        trie=trie,
        beta=0.1,
        loss=loss,
    )
    assert isinstance(trainer, trl.SFTTrainer) and isinstance(trainer, igd_sft_trainer_class())
    assert _has_fused_head(trainer.model)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < 0.7 * before["eval_loss"], (before, after)
    assert after["eval_loss_zero_ig"] > 0 and after["eval_loss_pos_ig"] > 0

    # the fused-head loss is the full-logits loss
    batch = CompletionCollator(PAD)(rows[:4])
    trainer.model.eval()
    with torch.no_grad():
        fused = trainer.compute_loss(trainer.model, dict(batch))
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        full = trainer.igd_loss_func(logits, batch["labels"])
    torch.testing.assert_close(fused, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["igd", "pos", "ce"])
def test_compute_loss_func_contract(trie, kind: str) -> None:
    """f(outputs, unshifted labels, num_items_in_batch) = sum w CE / num_items (or / sum w)."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    from igdbeam import igd_loss, pos_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 9, VOCAB, generator=g)
    labels = torch.full((2, 9), IGNORE)
    labels[0, 4:8] = torch.tensor([3, 4, 10, EOS])
    labels[1, 2:5] = torch.tensor([9, 12, EOS])
    func = make_compute_loss_func(trie, 0.2, loss=kind)
    outputs = transformers.modeling_outputs.CausalLMOutputWithPast(logits=logits)
    for n in (None, torch.tensor(13)):
        got = func(outputs, labels, num_items_in_batch=n)
        if kind == "igd":
            want = igd_loss(logits, labels, trie, 0.2, num_items_in_batch=n)
        elif kind == "pos":
            want = pos_loss(logits, labels, 0.2, num_items_in_batch=n)
        else:
            want = ForCausalLMLoss(logits, labels, VOCAB, num_items_in_batch=n)
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="needs labels"):
        func(outputs, None)


def test_left_trie_rows_are_logged(tmp_path, items, trie) -> None:
    rows = make_rows(items, 8, seed=7)
    for r in rows[:3]:
        r["completion_ids"] = r["completion_ids"][:-1] + [5, EOS]  # leaves the trie
    trainer = IGDTrainer(
        model=tiny_llama(),
        args=train_args(tmp_path, max_steps=2, logging_strategy="steps", logging_steps=1),
        train_dataset=ListDataset(rows),
        data_collator=CompletionCollator(PAD),
        trie=trie,
        beta=0.1,
    )
    trainer.train()
    logged = [h["igd_left_trie_rows"] for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2 and sum(logged) == 3


def test_label_validation_policy(trie) -> None:
    g = torch.Generator().manual_seed(0)
    outputs = {"logits": torch.randn(1, 4, VOCAB, generator=g)}
    good = torch.tensor([[IGNORE, 3, 4, EOS]])
    bad = torch.tensor([[IGNORE, 3, -7, EOS]])
    first = make_compute_loss_func(trie, 0.1)
    with pytest.raises(ValueError, match=r"labels\[0, 2\] = -7"):
        first(outputs, bad)
    always = make_compute_loss_func(trie, 0.1, validate="always")
    always(outputs, good)
    with pytest.raises(ValueError, match=r"labels\[0, 2\] = -7"):
        always(outputs, bad)
    with pytest.raises(ValueError, match="validate must be"):
        make_compute_loss_func(trie, 0.1, validate="sometimes")


# ------------------------------------------------------------ exact losses and gradients
# The loss of one batch, and the gradient it sends into the logits, against the pure-Python
# reference (tests/reference_loss.py) at fp32 tolerances: a wrong weight, denominator or shift
# fails these, where the loss-goes-down tests above would still pass.
# Zeros are never-seen items: item 10 ([9, 11, 18, 2]) leaves item 11 ([9, 19, 25, 2]) all the
# weight of (9,), so the edge 9 -> 19 has zero IG although (9,) has two children.
POPULARITY = [3.0, 0.0, 1.0, 5.0, 2.0, 0.0, 1.0, 4.0, 1.0, 0.0, 0.0, 6.0]
GRAD_TOL = {"atol": 1e-8, "rtol": 1e-5}  # fp32 softmax on entries of about w / Omega / V


@pytest.fixture(scope="module")
def pop_trie(items) -> ItemTrie:
    return ItemTrie.from_token_ids(items, POPULARITY, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def pop_ref(items) -> ReferenceTrie:
    return ReferenceTrie(items, POPULARITY)


def exact_rows(items: list[list[int]], n: int, seed: int) -> list[dict]:
    """Rows 0-2: the zero-IG edge 9 -> 19, the zero-weight item 10, a completion off the trie."""
    assert items[10][:2] == [9, 11] and items[11][:2] == [9, 19]
    rows = make_rows(items, n, seed)
    rows[0]["completion_ids"] = items[11]
    rows[1]["completion_ids"] = items[10]
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


def test_igd_trainer_compute_loss_is_the_reference(tmp_path, items, pop_trie, pop_ref) -> None:
    """IGDTrainer.compute_loss on one batch: the reference loss (Omega of the micro-batch, or of
    the step it is part of) and the reference gradient, and beta changes that gradient."""
    rows = exact_rows(items, 6, seed=11)
    batch = CompletionCollator(PAD)(rows[:3])
    other = CompletionCollator(PAD)(rows[3:])
    grads = {}
    for beta in (0.1, 0.6):
        model = tiny_llama(3)
        trainer = IGDTrainer(
            model=model,
            args=train_args(tmp_path),
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


def test_stock_trainer_compute_loss_is_the_reference(tmp_path, items, pop_trie, pop_ref) -> None:
    """A stock transformers.Trainer with make_compute_loss_func: sum w CE / num_items_in_batch
    with the Trainer's own token count of the step, or the micro-batch Omega without it."""
    rows = exact_rows(items, 6, seed=12)
    batch = CompletionCollator(PAD)(rows[:3])
    other = CompletionCollator(PAD)(rows[3:])
    for beta in (0.1, 0.6):
        model = tiny_llama(4)
        trainer = transformers.Trainer(
            model=model,
            args=train_args(tmp_path),
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
def test_accumulated_step_is_the_reference(tmp_path, items, pop_trie, pop_ref, kind) -> None:
    """One optimizer step of trainer.train() over 6 rows in 3 micro-batches of 2 (gradient
    accumulation): every micro-batch's loss and logits gradient are the reference's with the
    step's denominator (IGDTrainer: Omega of the step, so the micro-batch losses add up to the
    reference loss of the whole step; stock Trainer: its count of completion tokens), and the
    parameter update is the accumulated gradient."""
    beta = 0.2
    rows = exact_rows(items, 6, seed=13)
    model = tiny_llama(5)
    start = [p.detach().clone() for p in model.parameters()]
    args = train_args(
        tmp_path,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=3,
        max_steps=1,
        learning_rate=1.0,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        warmup_steps=0,
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
