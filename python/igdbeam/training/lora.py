"""LoRA fine-tuning helpers (through ``peft``): a Llama-family ``LoraConfig`` and a loader that
opens either a plain checkpoint or a saved adapter folder on top of its base model.

``IGDTrainer`` / ``IGDSFTTrainer`` train a ``peft.PeftModel`` like any other model (only the
adapter parameters receive gradients, the IGD label weights depend on the labels alone), and
``trainer.save_model()`` on a ``PeftModel`` writes the adapter files only
(``adapter_config.json`` + ``adapter_model.safetensors``). :func:`load_model_with_adapter` reads
such a folder back; ``igdbeam.generate`` accepts the ``PeftModel`` or its merged model.

``peft`` is an optional dependency: ``pip install "igdbeam[lora]"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import torch

__all__ = [
    "ADAPTER_CONFIG",
    "LLAMA_TARGET_MODULES",
    "adapter_base_path",
    "is_adapter_folder",
    "load_model_with_adapter",
    "lora_config",
]

ADAPTER_CONFIG = "adapter_config.json"
# The attention and MLP projections of Llama-family decoders (Llama, Mistral, Qwen2/3, SmolLM2,
# Gemma, ...). The LM head is left out on purpose: TRL's fused LM head reads ``lm_head.weight``
# directly, so an adapter there would never be trained by IGDSFTTrainer.
LLAMA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _peft() -> Any:
    try:
        import peft
    except ImportError as exc:  # pragma: no cover - peft is optional
        raise ImportError('LoRA needs peft: pip install "igdbeam[lora]"') from exc
    return peft


def lora_config(
    r: int = 16,
    alpha: float | None = None,
    dropout: float = 0.05,
    target_modules: Sequence[str] | str | None = None,
    **kwargs: Any,
) -> Any:
    """A ``peft.LoraConfig`` for causal-LM fine-tuning with Llama-family defaults.

    Args:
        r: LoRA rank (> 0).
        alpha: LoRA scaling numerator (``lora_alpha``); None: ``2 * r``.
        dropout: dropout on the LoRA input, in ``[0, 1)``.
        target_modules: module names to adapt; None: :data:`LLAMA_TARGET_MODULES` (the q, k, v, o
            attention and gate, up, down MLP projections); a string is a regex or ``"all-linear"``
            as peft accepts it.
        **kwargs: any other ``LoraConfig`` field (``modules_to_save``, ``trainable_token_indices``
            for newly added tokens, ``use_rslora``, ``init_lora_weights``, ...).

    Returns:
        ``peft.LoraConfig(task_type="CAUSAL_LM", bias="none", ...)``; use it with
        ``peft.get_peft_model(model, config)`` or ``IGDSFTTrainer(peft_config=config)``.

    Raises:
        ValueError: a non-positive rank or alpha, or a dropout outside ``[0, 1)``.
    """
    peft = _peft()
    if int(r) != r or r <= 0:
        raise ValueError(f"LoRA rank r must be a positive integer, got {r!r}")
    alpha = 2 * int(r) if alpha is None else alpha
    if not alpha > 0:
        raise ValueError(f"LoRA alpha must be > 0, got {alpha!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
    if target_modules is None:
        target_modules = list(LLAMA_TARGET_MODULES)
    elif not isinstance(target_modules, str):
        target_modules = list(target_modules)
        if not target_modules:
            raise ValueError("target_modules must name at least one module")
    kwargs.setdefault("task_type", "CAUSAL_LM")
    kwargs.setdefault("bias", "none")
    return peft.LoraConfig(
        r=int(r),
        lora_alpha=alpha,
        lora_dropout=float(dropout),
        target_modules=target_modules,
        **kwargs,
    )


def is_adapter_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder holding a peft adapter (``adapter_config.json``)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base_path(model_dir: str | os.PathLike[str]) -> str | None:
    """The base model an adapter folder was trained on (``base_model_name_or_path``).

    A relative path that does not exist from the working directory but exists next to the
    adapter folder is resolved against the adapter folder. Returns None when ``model_dir`` is not
    an adapter folder or its config names no base.
    """
    folder = Path(model_dir)
    if not is_adapter_folder(folder):
        return None
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder / ADAPTER_CONFIG}: unreadable adapter config: {exc}") from None
    base = config.get("base_model_name_or_path")
    if not base:
        return None
    base = str(base)
    if not os.path.isabs(base) and not os.path.exists(base):
        beside = folder / base
        if beside.exists():
            return str(beside)
    return base


def _saved_vocab_size(model_dir: Path, base: Any) -> int | None:
    """Rows of the input-embedding matrix saved in the adapter (a resized vocabulary), if any."""
    weights = model_dir / "adapter_model.safetensors"
    embed = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    if embed is None or not weights.is_file():
        return None
    names = [n for n, m in base.named_modules() if m is embed]
    if not names:
        return None
    from safetensors import safe_open

    leaf = names[0].split(".")[-1]
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            parts = key.split(".")
            if leaf in parts and key.endswith("weight") and "lora_" not in key:
                shape = f.get_slice(key).get_shape()
                if len(shape) == 2:
                    return int(shape[0])
    return None


def load_model_with_adapter(
    model_dir: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str] | Any | None = None,
    merge: bool = True,
    is_trainable: bool = False,
    vocab_size: int | None = None,
    **from_pretrained_kwargs: Any,
) -> Any:
    """Load a causal LM from a plain checkpoint folder or from a peft adapter folder.

    A folder with ``adapter_config.json`` is an adapter: its base model is loaded first (from
    ``base``, else the config's ``base_model_name_or_path``), its input embeddings are resized when
    the adapter saved a resized vocabulary (or to ``vocab_size``), then the adapter is applied.
    Any other folder (or hub id) is loaded with ``AutoModelForCausalLM.from_pretrained``.

    Args:
        model_dir: a checkpoint folder, a hub id, or an adapter folder.
        base: the base model of an adapter: a path / hub id, or an already loaded model (used as
            is and modified in place). Ignored for a plain checkpoint.
        merge: merge the adapter into the base weights and return a plain transformers model
            (the fastest for decoding, same outputs); False returns the ``peft.PeftModel``.
        is_trainable: load the adapter for further training (implies ``merge=False``).
        vocab_size: resize the base's token embeddings to this size before applying the adapter
            (for adapters trained after ``resize_token_embeddings`` whose embeddings were not
            saved with them).
        **from_pretrained_kwargs: passed to ``from_pretrained`` of the model / base (``dtype``,
            ``device_map``, ...).

    Returns:
        A ``transformers.PreTrainedModel`` (plain checkpoint, or merged adapter) or a
        ``peft.PeftModel`` (``merge=False`` / ``is_trainable=True``), in eval mode unless
        trainable.

    Raises:
        ValueError: an adapter folder whose base cannot be determined.
        ImportError: an adapter folder without ``peft`` installed.
    """
    import transformers

    folder = Path(model_dir)
    if not is_adapter_folder(folder):
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(model_dir), **from_pretrained_kwargs
        )
        model.eval()
        return model
    peft = _peft()
    if base is None:
        base = adapter_base_path(folder)
        if base is None:
            raise ValueError(
                f"{folder / ADAPTER_CONFIG} names no base model (base_model_name_or_path); "
                "pass base= (a checkpoint path or a loaded model)"
            )
    if isinstance(base, str | os.PathLike):
        base_model = transformers.AutoModelForCausalLM.from_pretrained(
            str(base), **from_pretrained_kwargs
        )
    else:
        base_model = base
    target_vocab = vocab_size if vocab_size is not None else _saved_vocab_size(folder, base_model)
    # nn.Module types its attributes as Tensor | Module; an embedding's weight is a Tensor.
    current = cast("torch.Tensor", base_model.get_input_embeddings().weight).shape[0]
    if target_vocab is not None and int(target_vocab) != current:
        base_model.resize_token_embeddings(int(target_vocab))
    model = peft.PeftModel.from_pretrained(base_model, str(folder), is_trainable=is_trainable)
    if is_trainable:
        return model
    if merge:
        model = model.merge_and_unload()
    model.eval()
    return model
