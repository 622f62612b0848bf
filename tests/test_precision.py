"""``--dtype auto|float32|bfloat16``: what each value resolves to, and how a model is loaded and
trained in it."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import igdbeam.precision as precision
from factories.data import write_tiny_data
from factories.models import write_tiny_model
from igdbeam.precision import DTYPE_CHOICES, dtype_name, resolve_dtype


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_hardware(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(precision, "_cpu_has_bf16", lambda: native)
    assert resolve_dtype("auto", "cpu") == (torch.bfloat16 if native else torch.float32)
    assert resolve_dtype("float32", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16


@pytest.mark.parametrize("native", [True, False])
def test_explicit_bfloat16_warns_once_where_the_cpu_emulates_it(monkeypatch, native) -> None:
    monkeypatch.setattr(precision, "_cpu_has_bf16", lambda: native)
    precision._warn_emulated.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
            assert resolve_dtype(torch.bfloat16, "cpu") == torch.bfloat16
        assert resolve_dtype("auto", "cpu") == (torch.bfloat16 if native else torch.float32)
        assert resolve_dtype("float32", "cpu") == torch.float32
    emulated = [w for w in caught if issubclass(w.category, precision.EmulatedPrecisionWarning)]
    assert len(emulated) == (0 if native else 1)
    if emulated:
        assert "neither AVX512-BF16 nor AMX-BF16" in str(emulated[0].message)
        assert emulated[0].filename == __file__  # points at the caller, not at igdbeam
    precision._warn_emulated.cache_clear()


def test_auto_reads_the_cpu_flags() -> None:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        flags = f.read()
    native = " avx512_bf16" in flags or " amx_bf16" in flags
    assert precision.bf16_is_native("cpu") == native
    assert resolve_dtype("auto") == (torch.bfloat16 if native else torch.float32)


@pytest.mark.parametrize("bad", ["float16", "bf16", "AUTO", "", 16, torch.float16, torch.int8])
def test_other_values_are_refused(bad) -> None:
    with pytest.raises(ValueError, match="dtype must be"):
        resolve_dtype(bad)


def test_names_round_trip() -> None:
    assert DTYPE_CHOICES == ("auto", "float32", "bfloat16")
    assert resolve_dtype(None) == torch.float32
    for name in DTYPE_CHOICES[1:]:
        assert dtype_name(resolve_dtype(name)) == name


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("precision")
    return {
        "root": root,
        "model": write_tiny_model(root / "model"),
        "data": write_tiny_data(root / "data"),
    }


def test_loading_casts_after_loading(tiny) -> None:
    from igdbeam.app.assets import load_model_and_tokenizer

    fp32, _ = load_model_and_tokenizer(str(tiny["model"]))
    bf16, _ = load_model_and_tokenizer(str(tiny["model"]), dtype="bfloat16")
    assert fp32.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    for (name, a), (_, b) in zip(fp32.named_parameters(), bf16.named_parameters(), strict=True):
        assert torch.equal(a.to(torch.bfloat16), b), name
    with pytest.raises(ValueError, match="dtype must be"):
        load_model_and_tokenizer(str(tiny["model"]), dtype="half")


@pytest.mark.parametrize("lora_r", [4, 0])
def test_bf16_training_keeps_float32_trainable_weights(tiny, lora_r: int) -> None:
    """LoRA: the frozen base in bfloat16, the adapter in float32. Full fine-tune: float32
    master weights under bfloat16 autocast. Either way the weights change and stay finite."""
    from igdbeam.app.assets import load_model_and_tokenizer
    from igdbeam.app.pipeline import build_trie, train_model
    from igdbeam.data import load_dataset

    ds = load_dataset(tiny["data"], splits=("train",))
    model, tok = load_model_and_tokenizer(str(tiny["model"]))
    trie = build_trie(ds, tok, "igd")
    lora = None
    if lora_r:
        from igdbeam.training.lora import lora_config

        lora = lora_config(lora_r)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = tiny["root"] / f"train-{lora_r}"
    metrics = train_model(
        model,
        tok,
        trie,
        ds.split("train"),
        out,
        loss="igd",
        max_steps=2,
        batch_size=4,
        learning_rate=1e-2,
        progress=False,
        lora=lora,
        dtype="bfloat16",
        save=False,
    )
    assert metrics["bf16_autocast"] is (lora_r == 0)
    trained = {n.replace("base_model.model.", ""): p for n, p in model.named_parameters()}
    if lora_r:
        assert metrics["dtype"] == "bfloat16"  # the first parameter is a frozen base weight
        adapters = {n: p for n, p in trained.items() if "lora_" in n}
        assert adapters and all(p.dtype == torch.float32 for p in adapters.values())
        frozen = [p for n, p in trained.items() if "lora_" not in n]
        assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in frozen)
    else:
        assert metrics["dtype"] == "float32"
        changed = [n for n, p in before.items() if not torch.equal(p, trained[n].detach())]
        assert changed and all(torch.isfinite(p).all() for p in trained.values())
