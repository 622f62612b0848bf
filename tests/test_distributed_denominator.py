"""The step's denominator and the token weights it shares with the loss (one process).

IGDTrainer and IGDSFTTrainer compute each micro-batch's token weights once: for the step's
denominator (``_get_num_items_in_batch``), then reused by the loss. The label-weights op must run
once per micro-batch, the reused weights must give the loss computed from scratch, and the
denominator must be the step's weight sum even when transformers itself would not count (a
model whose forward takes no loss kwargs): then the accumulated step still equals one batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from factories.training import PARITY_GLOBAL_BATCH, parity_trainer, trainable_params

pytest.importorskip("transformers")


def _count_weight_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Record the label shape of every label-weights call of the training modules (the loss
    functions call ``label_token_weights``; ``IGDLossFunc``, whose beta is checked when it is
    built, calls ``checked_label_token_weights``)."""
    import igdbeam.training.loss as loss_mod
    import igdbeam.training.loss_func as loss_func_mod
    from igdbeam.ops import label_weights

    calls: list[tuple[int, ...]] = []

    def counting(real: Any) -> Any:
        def count(labels: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            calls.append(tuple(labels.shape))
            return real(labels, *args, **kwargs)

        return count

    for module in (loss_mod, loss_func_mod):
        for name in ("label_token_weights", "checked_label_token_weights"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, counting(getattr(label_weights, name)))
    return calls


@pytest.mark.parametrize("kind", ["igd", "sft", "sft_logits"])
def test_one_label_weights_pass_per_micro_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """8 rows, batch 1, 2 accumulation steps: 8 micro-batches, 8 trie walks (not 16)."""
    if kind.startswith("sft"):
        pytest.importorskip("trl")
        pytest.importorskip("datasets")
    calls = _count_weight_calls(monkeypatch)
    trainer = parity_trainer(kind, 1, 2, True, tmp_path, rows=8)
    trainer.train()
    assert trainer.state.global_step == 4
    assert len(calls) == 8, calls
    assert all(shape[0] == 1 for shape in calls)


def test_reused_weights_give_the_loss_from_scratch() -> None:
    """Weights handed over (argument or pending) equal the ones the loss computes itself; weights
    of another batch shape are refused as an argument and ignored when pending."""
    from factories.training import PARITY_BETA, PARITY_ITEMS, PARITY_WEIGHTS, VOCAB
    from igdbeam import ItemTrie
    from igdbeam.training.loss_func import IGDLossFunc

    trie = ItemTrie.from_token_ids(PARITY_ITEMS, weights=PARITY_WEIGHTS, vocab_size=VOCAB)
    func = IGDLossFunc(trie, PARITY_BETA)
    g = torch.Generator().manual_seed(0)
    labels = torch.full((2, 9), -100)
    labels[0, 3:7] = torch.tensor(PARITY_ITEMS[0])
    labels[1, 2:8] = torch.tensor(PARITY_ITEMS[4])
    logits = torch.randn(2, 9, VOCAB, generator=g)
    outputs = {"logits": logits}
    fresh = func(outputs, labels, 7.0)
    weights = func.micro_batch_weights(labels)
    assert torch.equal(func(outputs, labels, 7.0, weights=weights), fresh)
    func.pending_weights = weights
    assert torch.equal(func(outputs, labels, 7.0), fresh)
    assert func.pending_weights is None
    other = func.micro_batch_weights(labels[:, :5])
    with pytest.raises(ValueError, match="do not belong to labels"):
        func(outputs, labels, 7.0, weights=other)
    func.pending_weights = other  # stale: the loss walks the labels itself
    assert torch.equal(func(outputs, labels, 7.0), fresh)
    # the log-prob path with the same weights: the same loss
    log_probs = logits.log_softmax(-1)[:, :-1].gather(-1, labels[:, 1:].clamp(min=0)[..., None])
    from_lp = func.loss_from_log_probs(log_probs[..., 0], labels, 7.0, weights=weights)
    torch.testing.assert_close(from_lp, fresh)


@pytest.mark.parametrize("kind", ["igd", "sft"])
def test_accumulation_without_loss_kwargs_equals_one_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """With a model whose forward takes no loss kwargs transformers counts nothing
    (``num_items_in_batch`` None): the trainers still divide by the step's weight sum and say
    so (``loss_is_scaled_for_ga``), so batch 1 x 4 accumulation steps equals batch 4."""
    if kind == "sft":
        pytest.importorskip("trl")
        pytest.importorskip("datasets")
    import transformers

    monkeypatch.setattr(transformers.LlamaForCausalLM, "accepts_loss_kwargs", False, raising=False)
    runs = {}
    for batch, accumulation in ((PARITY_GLOBAL_BATCH, 1), (1, PARITY_GLOBAL_BATCH)):
        trainer = parity_trainer(kind, batch, accumulation, True, tmp_path / f"{batch}", rows=8)
        assert not trainer.model_accepts_loss_kwargs
        before = trainable_params(trainer.model)
        trainer.train()
        runs[batch] = trainable_params(trainer.model)
        assert (runs[batch] - before).abs().max() > 1e-2
    torch.testing.assert_close(runs[1], runs[PARITY_GLOBAL_BATCH], atol=1e-5, rtol=0)


def test_fused_head_under_fsdp2_needs_trl_to_gather_the_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """IGDSFTTrainer keeps TRL's fused LM head under FSDP2 when the installed TRL gathers a
    DTensor head itself (TRL 1.16 does), and falls back to the logits under FSDP1."""
    pytest.importorskip("trl")
    import igdbeam.training.sft_trainer as sft

    class Plugin:
        fsdp_version = 2

    class State:
        fsdp_plugin = Plugin()

    class Acc:
        distributed_type = "DistributedType.FSDP"
        state = State()

    assert sft._fused_head_gathers_dtensor()  # TRL 1.16's add_fused_lm_head: full_tensor()
    assert sft._fused_head_safe(Acc())
    Plugin.fsdp_version = 1
    assert not sft._fused_head_safe(Acc())
    Plugin.fsdp_version = 2
    monkeypatch.setattr(sft, "_fused_head_gathers_dtensor", lambda: False)
    assert not sft._fused_head_safe(Acc())
