"""LoRA through peft: IGDTrainer / IGDSFTTrainer train only the adapter with the exact IGD loss,
save the adapter alone, and the saved folder reloads (and decodes) to the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from factories.ids import BOS, EOS, PAD
from factories.models import word_tokenizer
from factories.training import (
    EXACT_SGD,
    VOCAB,
    ListDataset,
    completion_rows,
    run_kwargs,
    training_llama,
)
from oracles.loss import reference_igd_loss
from oracles.trie import ReferenceTrie

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import igdbeam  # noqa: E402
from igdbeam import (  # noqa: E402
    CompletionCollator,
    IGDTrainer,
    ItemTrie,
    is_adapter_folder,
    load_model_with_adapter,
    lora_config,
)
from igdbeam.training.lora import LLAMA_TARGET_MODULES, adapter_base_path  # noqa: E402

BETA = 0.1
ITEMS = [
    [3, 4, 10, EOS],
    [3, 4, 11, 12, EOS],
    [3, 4, 11, 13, EOS],
    [5, 14, EOS],
    [5, 15, 16, EOS],
    [6, 7, 8, 17, EOS],
    [9, 18, EOS],
    [9, 19, 20, EOS],
]
WEIGHTS = [4, 2, 1, 3, 1, 2, 1, 1]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def make_rows(n: int, seed: int) -> list[dict]:
    """Prompts of 1-4 history tokens ending in a user token that determines the target item."""
    return completion_rows(ITEMS, n, seed, history=(1, 4), counterfactual=False)


def lora_run(out: Path, **kw) -> dict:
    """Run keywords: three exact SGD steps at lr 0.5 (big enough to move every adapter weight)."""
    return run_kwargs(out, learning_rate=0.5, max_steps=3, **EXACT_SGD, **kw)


@pytest.fixture(scope="module")
def trie() -> ItemTrie:
    return ItemTrie.from_token_ids(ITEMS, weights=WEIGHTS, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def reference_trie() -> ReferenceTrie:
    return ReferenceTrie(ITEMS, WEIGHTS)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved random base checkpoint (so the adapter config records a loadable base path)."""
    folder = tmp_path_factory.mktemp("base")
    training_llama().save_pretrained(folder)
    return folder


def lora_model(base_dir: Path, seed: int = 1) -> peft.PeftModel:
    """The base checkpoint with a rank-4 LoRA on every projection (random B, so not a no-op)."""
    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(seed)
    return peft.get_peft_model(base, lora_config(r=4, dropout=0.0, init_lora_weights=False))


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def reference_loss(model: torch.nn.Module, batch: dict, reference_trie: ReferenceTrie) -> float:
    """The pure-Python IGD loss of the model's logits on ``batch`` (micro-batch Omega)."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return reference_igd_loss(
        logits.double().tolist(), batch["labels"].tolist(), reference_trie, BETA
    )


def test_lora_config_defaults() -> None:
    config = lora_config()
    assert isinstance(config, peft.LoraConfig)
    assert set(config.target_modules) == set(LLAMA_TARGET_MODULES)
    assert set(LLAMA_TARGET_MODULES) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert (config.r, config.lora_alpha, config.lora_dropout) == (16, 32, 0.05)
    assert config.task_type == "CAUSAL_LM" and config.bias == "none"
    custom = lora_config(8, 4.0, 0.0, ["q_proj", "v_proj"], modules_to_save=["embed_tokens"])
    assert (custom.r, custom.lora_alpha, custom.lora_dropout) == (8, 4.0, 0.0)
    assert set(custom.target_modules) == {"q_proj", "v_proj"}
    assert list(custom.modules_to_save) == ["embed_tokens"]
    for bad in ({"r": 0}, {"r": 2.5}, {"alpha": 0}, {"dropout": 1.0}, {"target_modules": []}):
        with pytest.raises(ValueError):
            lora_config(**bad)


def test_igd_trainer_lora_trains_adapter_only_and_saves_it(
    tmp_path: Path, base_dir: Path, trie: ItemTrie, reference_trie: ReferenceTrie
) -> None:
    model = lora_model(base_dir)
    rows = make_rows(12, seed=0)
    trainer = IGDTrainer(
        model=model,
        args=transformers.TrainingArguments(**lora_run(tmp_path / "run")),
        train_dataset=ListDataset(rows),
        data_collator=CompletionCollator(PAD),
        trie=trie,
        beta=BETA,
    )
    batch = CompletionCollator(PAD)(rows[:4])
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
    assert loss.item() == pytest.approx(reference_loss(model, batch, reference_trie), rel=1e-5)

    before = snapshot(model)
    trainer.train()
    after = snapshot(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert changed == trainable  # every adapter weight moved, no base weight did

    out = tmp_path / "adapter"
    trainer.save_model(str(out))
    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert not files & {"model.safetensors", "pytorch_model.bin", "config.json"}
    full = (base_dir / "model.safetensors").stat().st_size
    assert (out / "adapter_model.safetensors").stat().st_size < full / 4
    assert is_adapter_folder(out) and not is_adapter_folder(base_dir)
    assert Path(adapter_base_path(out)).resolve() == base_dir.resolve()

    model.eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits
        unmerged = load_model_with_adapter(out, merge=False)
        assert isinstance(unmerged, peft.PeftModel) and not unmerged.training
        torch.testing.assert_close(
            unmerged(input_ids=ids, attention_mask=mask).logits, want, atol=0, rtol=0
        )
        merged = load_model_with_adapter(out)
        assert isinstance(merged, transformers.LlamaForCausalLM)
        assert not any("lora_" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(
            merged(input_ids=ids, attention_mask=mask).logits, want, atol=1e-5, rtol=1e-5
        )
        # an explicit base (a path or a loaded model) instead of the recorded one
        again = load_model_with_adapter(
            out, base=transformers.AutoModelForCausalLM.from_pretrained(base_dir)
        )
        torch.testing.assert_close(
            again(input_ids=ids, attention_mask=mask).logits, want, atol=1e-5, rtol=1e-5
        )
    # the trained adapter reproduces the reference loss too
    assert trainer.compute_loss(model, dict(batch)).item() == pytest.approx(
        reference_loss(merged, batch, reference_trie), rel=1e-4
    )


@pytest.mark.parametrize("how", ["peft_model", "peft_config"])
def test_igd_sft_trainer_lora_fused_head(
    tmp_path: Path, base_dir: Path, trie: ItemTrie, reference_trie: ReferenceTrie, how: str
) -> None:
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from igdbeam import IGDSFTTrainer
    from igdbeam.training.sft_trainer import _has_fused_head

    rows = make_rows(12, seed=1)
    data = datasets.Dataset.from_list(rows)
    skip = {"skip_prepare_dataset": True}
    args = trl.SFTConfig(
        **lora_run(tmp_path / "run", dataset_kwargs=skip, max_length=None, bf16=False)
    )
    if how == "peft_model":
        kwargs = {"model": lora_model(base_dir)}
    else:
        torch.manual_seed(1)
        kwargs = {
            "model": transformers.AutoModelForCausalLM.from_pretrained(base_dir),
            "peft_config": lora_config(r=4, dropout=0.0, init_lora_weights=False),
        }
    trainer = IGDSFTTrainer(
        args=args,
        train_dataset=data,
        processing_class=word_tokenizer(VOCAB),
        data_collator=CompletionCollator(PAD),
        trie=trie,
        beta=BETA,
        **kwargs,
    )
    model = trainer.model
    assert isinstance(model, peft.PeftModel)
    assert _has_fused_head(model) and trainer.igd_fused_head
    batch = CompletionCollator(PAD)(rows[:4])
    model.eval()
    with torch.no_grad():
        fused = trainer.compute_loss(model, dict(batch))
    assert fused.item() == pytest.approx(reference_loss(model, batch, reference_trie), rel=1e-5)

    before = snapshot(model)
    trainer.train()
    after = snapshot(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all("lora_" in n for n in changed)
    assert changed == {n for n, p in model.named_parameters() if p.requires_grad}

    model.eval()
    with torch.no_grad():
        fused = trainer.compute_loss(model, dict(batch))
        trainer.igd_fused_head = False  # the logits path gives the same loss
        logits_path = trainer.compute_loss(model, dict(batch))
    torch.testing.assert_close(fused, logits_path, atol=1e-5, rtol=1e-5)
    assert fused.item() == pytest.approx(reference_loss(model, batch, reference_trie), rel=1e-5)

    out = tmp_path / "adapter"
    trainer.save_model(str(out))
    assert (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4


def test_sft_fused_head_option(tmp_path: Path, trie: ItemTrie, monkeypatch) -> None:
    """fused_head=False forces the logits path; auto falls back under ZeRO-3 without a gather."""
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from igdbeam import IGDSFTTrainer
    from igdbeam.training.sft_trainer import _fused_head_safe

    skip = {"skip_prepare_dataset": True}
    args = trl.SFTConfig(**run_kwargs(tmp_path, dataset_kwargs=skip, max_length=None))
    common = {
        "args": args,
        "train_dataset": datasets.Dataset.from_list(make_rows(4, seed=2)),
        "processing_class": word_tokenizer(VOCAB),
        "data_collator": CompletionCollator(PAD),
        "trie": trie,
    }
    assert IGDSFTTrainer(model=training_llama(), **common).igd_fused_head
    assert not IGDSFTTrainer(model=training_llama(), fused_head=False, **common).igd_fused_head
    with pytest.raises(ValueError, match="fused_head"):
        IGDSFTTrainer(model=training_llama(), fused_head="yes", **common)

    class Acc:
        distributed_type = "DistributedType.MULTI_GPU"

    assert _fused_head_safe(Acc())
    Acc.distributed_type = "FSDP"
    assert not _fused_head_safe(Acc())
    Acc.distributed_type = "DEEPSPEED"
    import transformers.integrations.deepspeed as ds
    import trl.trainer.utils as trl_utils

    monkeypatch.setattr(ds, "is_deepspeed_zero3_enabled", lambda: True)
    assert _fused_head_safe(Acc()) == hasattr(trl_utils, "maybe_gather_lm_head_ctx")
    monkeypatch.delattr(trl_utils, "maybe_gather_lm_head_ctx", raising=False)
    assert not _fused_head_safe(Acc())


def test_generate_with_peft_model_equals_merged(base_dir: Path, trie: ItemTrie) -> None:
    model = lora_model(base_dir, seed=3)
    model.eval()
    ids = torch.tensor([[PAD, PAD, BOS, 31, 41], [BOS, 33, 35, 37, 44]])
    mask = (ids != PAD).long()
    got = igdbeam.generate(model, ids, mask, trie=trie, num_beams=4, alpha=0.2, length_penalty=0.0)
    merged = model.merge_and_unload()  # merges in place: after the PeftModel's search
    assert isinstance(merged, transformers.LlamaForCausalLM)
    want = igdbeam.generate(
        merged, ids, mask, trie=trie, num_beams=4, alpha=0.2, length_penalty=0.0
    )
    assert torch.equal(got.item_ids, want.item_ids)
    assert torch.equal(got.sequences, want.sequences)
    torch.testing.assert_close(got.scores, want.scores, atol=1e-5, rtol=1e-5)
    assert (got.item_ids >= 0).all()


def test_load_model_with_adapter_plain_and_errors(tmp_path: Path, base_dir: Path) -> None:
    plain = load_model_with_adapter(base_dir)
    assert isinstance(plain, transformers.LlamaForCausalLM) and not plain.training
    assert adapter_base_path(base_dir) is None

    # an adapter of a model built from a config records no base: base= is required
    orphan = peft.get_peft_model(training_llama(), lora_config(r=2))
    orphan.save_pretrained(tmp_path / "orphan")
    assert is_adapter_folder(tmp_path / "orphan")
    with pytest.raises(ValueError, match="base="):
        load_model_with_adapter(tmp_path / "orphan")
    model = load_model_with_adapter(tmp_path / "orphan", base=base_dir, merge=False)
    assert isinstance(model, peft.PeftModel)
    trainable = load_model_with_adapter(tmp_path / "orphan", base=base_dir, is_trainable=True)
    assert isinstance(trainable, peft.PeftModel)
    assert any(p.requires_grad for p in trainable.parameters())
    assert all("lora_" in n for n, p in trainable.named_parameters() if p.requires_grad)


def test_adapter_with_resized_vocabulary(tmp_path: Path, base_dir: Path) -> None:
    """Tokens added before LoRA (semantic IDs): the loader resizes the base to the adapter's."""
    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir)
    base.resize_token_embeddings(VOCAB + 6, mean_resizing=False)
    torch.manual_seed(4)
    model = peft.get_peft_model(
        base, lora_config(r=2, dropout=0.0, init_lora_weights=False, modules_to_save=None)
    )
    model.save_pretrained(tmp_path / "resized")
    ids = torch.tensor([[BOS, VOCAB + 1, VOCAB + 5, 7]])
    model.eval()
    with torch.no_grad():
        want = model(input_ids=ids).logits
        got = load_model_with_adapter(tmp_path / "resized")
        assert got.get_input_embeddings().weight.shape[0] == VOCAB + 6
        torch.testing.assert_close(got(input_ids=ids).logits, want, atol=1e-5, rtol=1e-5)
