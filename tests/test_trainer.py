"""Trainer integration: a tiny random Llama trained with each loss, accumulation invariance, and
the evaluation-time zero-IG / positive-IG losses."""

from __future__ import annotations

import pytest
import torch

from factories.ids import EOS, PAD
from factories.models import word_tokenizer
from factories.training import (
    EXACT_SGD,
    VOCAB,
    ListDataset,
    completion_rows,
    run_kwargs,
    shared_prefix_items,
    training_args,
    training_llama,
)
from oracles.loss import IGNORE

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

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ITEMS = shared_prefix_items()


@pytest.fixture(scope="module")
def trie() -> ItemTrie:
    return ItemTrie.from_token_ids(ITEMS, vocab_size=VOCAB)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["igd", "pos", "ce", "cft"])
def test_igd_trainer_loss_goes_down(tmp_path, trie, loss: str) -> None:
    train = ListDataset(completion_rows(ITEMS, 16, seed=1))
    collator = CFTCollator(PAD) if loss == "cft" else CompletionCollator(PAD)
    trainer = IGDTrainer(
        model=training_llama(kv_heads=4),
        args=training_args(tmp_path),
        train_dataset=train,
        eval_dataset=train,
        data_collator=collator,
        trie=trie,
        beta=0.1,
        loss=loss,
        cft_weight=0.3,
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < 0.7 * before["eval_loss"], (before, after)
    for m in (before, after):
        assert m["eval_loss_zero_ig"] > 0 and m["eval_loss_pos_ig"] > 0
        assert 0 < m["eval_zero_ig_token_share"] < 1


def test_stock_trainer_with_compute_loss_func(tmp_path, trie) -> None:
    train = ListDataset(completion_rows(ITEMS, 16, seed=2))
    trainer = transformers.Trainer(
        model=training_llama(kv_heads=4),
        args=training_args(tmp_path, max_steps=20),
        train_dataset=train,
        eval_dataset=train,
        data_collator=CompletionCollator(PAD),
        compute_loss_func=make_compute_loss_func(trie, 0.1),
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    assert trainer.evaluate()["eval_loss"] < 0.7 * before


def test_eval_zero_and_positive_ig_losses(tmp_path, trie) -> None:
    """The logged means equal a direct computation over the evaluation set."""
    rows = completion_rows(ITEMS, 10, seed=3)
    model = training_llama(1, kv_heads=4)
    trainer = IGDTrainer(
        model=model,
        args=training_args(tmp_path, per_device_eval_batch_size=4),
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
    model = training_llama(2, kv_heads=4)
    start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    args = training_args(
        tmp_path,
        per_device_train_batch_size=bs,
        gradient_accumulation_steps=ga,
        max_steps=1,
        learning_rate=1.0,
        **EXACT_SGD,
    )
    trainer = make_trainer(model, args, ListDataset(rows))
    trainer.train()
    end = torch.cat([p.detach().flatten() for p in model.parameters()])
    return end - start


@pytest.mark.slow
def test_accumulation_invariance(tmp_path, trie) -> None:
    """One optimizer step over 4 rows: the same update with 1, 2 or 4 micro-batches."""
    rows = completion_rows(ITEMS, 4, seed=4)  # rows of different lengths: padding differs per split

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


def test_igd_weights_normalisation_is_the_step_reference_loss(tmp_path, trie) -> None:
    """IGDTrainer's denominator over a step is the weight sum of the whole step (Omega)."""
    rows = completion_rows(ITEMS, 4, seed=5)
    trainer = IGDTrainer(
        model=training_llama(kv_heads=4),
        args=training_args(tmp_path),
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
        IGDTrainer(
            model=training_llama(kv_heads=4), args=training_args(tmp_path), trie=trie, loss="focal"
        )
    with pytest.raises(ValueError, match="needs a trie"):
        IGDTrainer(model=training_llama(kv_heads=4), args=training_args(tmp_path), loss="igd")
    with pytest.raises(ValueError, match="beta"):
        make_compute_loss_func(trie, 3.0)
    with pytest.raises(ValueError, match="cft"):
        make_compute_loss_func(trie, 0.1, loss="cft")


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["igd", "pos"])
def test_igd_sft_trainer(tmp_path, trie, loss: str) -> None:
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from igdbeam.training.sft_trainer import _has_fused_head, igd_sft_trainer_class

    rows = completion_rows(ITEMS, 16, seed=6)
    data = datasets.Dataset.from_list(
        [{"prompt_ids": r["prompt_ids"], "completion_ids": r["completion_ids"]} for r in rows]
    )
    args = trl.SFTConfig(
        **run_kwargs(tmp_path, dataset_kwargs={"skip_prepare_dataset": True}, max_length=None)
    )
    from igdbeam import IGDSFTTrainer

    trainer = IGDSFTTrainer(
        model=training_llama(kv_heads=4),
        args=args,
        train_dataset=data,
        eval_dataset=data,
        processing_class=word_tokenizer(VOCAB),
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


def test_left_trie_rows_are_logged(tmp_path, trie) -> None:
    rows = completion_rows(ITEMS, 8, seed=7)
    for r in rows[:3]:
        r["completion_ids"] = r["completion_ids"][:-1] + [5, EOS]  # leaves the trie
    trainer = IGDTrainer(
        model=training_llama(kv_heads=4),
        args=training_args(tmp_path, max_steps=2, logging_strategy="steps", logging_steps=1),
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
