"""IGD fine-tuning with TRL's ``SFTTrainer``.

``IGDSFTTrainer`` is TRL's ``SFTTrainer`` with ``compute_loss`` overridden (TRL deprecates
``compute_loss_func`` from 1.15); it scores tokens with TRL's fused LM head (per-token
log-probs, no full logits) when available. The class is built on first access
(:func:`igd_sft_trainer_class`), so TRL is imported only when it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from igdbeam.training.trainer import IGDTrainerMixin

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie

__all__ = [
    "IGDSFTTrainer",  # noqa: F822 - built lazily by __getattr__
    "igd_sft_trainer_class",
]


def _sft_trainer_class() -> type:
    try:
        import trl
    except ImportError as exc:  # pragma: no cover - trl is optional
        raise ImportError("IGDSFTTrainer needs TRL: pip install trl") from exc
    return trl.SFTTrainer


_IGD_SFT_CLASS: type | None = None


def _build_sft_class() -> type:
    base = _sft_trainer_class()

    class _IGDSFTTrainer(IGDTrainerMixin, base):  # type: ignore[misc, valid-type]
        """TRL ``SFTTrainer`` fine-tuning with the IGD loss (or the Pos / plain CE baselines).

        Takes ``SFTTrainer``'s arguments plus ``trie``, ``beta``, ``loss`` (``"igd"``, ``"pos"``
        or ``"ce"``), ``off_trie``, ``normalize`` and ``ignore_index`` as
        :class:`~igdbeam.IGDTrainer`.
        ``compute_loss`` is overridden (TRL deprecates ``compute_loss_func`` from 1.15); when TRL's
        fused LM head is present (recent SFTTrainers patch the model with it) the loss comes from
        its per-token log-probabilities without materialising the full logits, otherwise from the
        logits. ``fused_head``: ``None`` (default) uses the fused head when TRL added it and the
        LM head is not sharded in a way the installed TRL cannot gather (DeepSpeed ZeRO-3 without
        TRL's gather context, FSDP2 without TRL's DTensor gather, or FSDP1), ``False`` always
        uses the logits, ``True`` requires the fused head. A ``peft.PeftModel`` (or
        ``peft_config=``) trains its adapter only; the label weights and the loss are the same as
        for the full model. Evaluation logs ``eval_loss_zero_ig`` / ``eval_loss_pos_ig`` like
        IGDTrainer.
        """

        def __init__(
            self,
            *args: Any,
            trie: ItemTrie | None = None,
            beta: float = 0.1,
            loss: str = "igd",
            off_trie: str = "uniform",
            normalize: str = "weights",
            ignore_index: int = -100,
            validate: str = "first",
            fused_head: bool | None = None,
            **kwargs: Any,
        ) -> None:
            if fused_head not in (None, True, False):
                raise ValueError(f"fused_head must be None, True or False, got {fused_head!r}")
            if loss not in ("igd", "pos", "ce"):
                raise ValueError(f"IGDSFTTrainer supports loss 'igd', 'pos' or 'ce', got {loss!r}")
            if kwargs.get("compute_loss_func") is not None:
                raise ValueError("IGDSFTTrainer computes the loss itself; pass loss=... instead")
            self._init_igd(trie, beta, loss, 1.0, off_trie, normalize, ignore_index, validate)
            super().__init__(*args, **kwargs)
            available = _has_fused_head(self.model)
            if fused_head and not available:
                raise ValueError(
                    "fused_head=True but the model has no TRL fused LM head (TRL too old?)"
                )
            if fused_head is None:
                fused_head = available and _fused_head_safe(self.accelerator)
            self.igd_fused_head = bool(fused_head)

        def compute_loss(
            self,
            model: torch.nn.Module,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            """IGD loss on TRL's fused per-token log-probs (full logits only as a fallback)."""
            mode = "train" if self.model.training else "eval"
            if inputs.get("labels") is None:
                raise ValueError("IGDSFTTrainer needs 'labels' in every batch")
            weights = self._pop_weights(inputs)  # computed once, for the step's denominator
            inputs["use_cache"] = False
            labels = inputs["labels"]
            fused = self.igd_fused_head
            if fused:
                outputs = model(**inputs, fused_lm_head=True)
                loss = self.igd_loss_func.loss_from_log_probs(
                    outputs.log_probs, labels, num_items_in_batch, weights=weights
                )
                mask = outputs.label_mask
                self._log_sft_metrics(mode, outputs, mask)
            else:
                outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
                loss = self.igd_loss_func(outputs, labels, num_items_in_batch, weights=weights)
            # The denominator covers every process (_get_num_items_in_batch): scale for DDP's mean.
            loss = loss * self._igd_loss_scale(num_items_in_batch, False)
            if return_outputs and fused:
                with torch.no_grad():
                    outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            return (loss, outputs) if return_outputs else loss

        def _log_sft_metrics(self, mode: str, outputs: Any, mask: torch.Tensor) -> None:
            metrics = getattr(self, "_metrics", None)
            if metrics is None:
                return
            acc = self.accelerator
            n = acc.gather_for_metrics(mask.sum()).sum()
            if outputs.entropy is not None:
                ent = acc.gather_for_metrics(outputs.entropy.detach().sum()).sum()
                metrics[mode]["entropy"].append((ent / n).item() if n > 0 else 0.0)
            if outputs.is_top1 is not None:
                top1 = acc.gather_for_metrics(outputs.is_top1.sum()).sum()
                metrics[mode]["mean_token_accuracy"].append((top1 / n).item() if n > 0 else 0.0)

    _IGDSFTTrainer.__name__ = "IGDSFTTrainer"
    _IGDSFTTrainer.__qualname__ = "IGDSFTTrainer"
    return _IGDSFTTrainer


def _fused_head_safe(accelerator: Any) -> bool:
    """Whether TRL's fused LM head sees the whole ``lm_head.weight`` under this parallelism.

    The fused head multiplies the hidden states by ``lm_head.weight`` directly, without calling
    the ``lm_head`` module. DeepSpeed ZeRO-3 shards that weight and gathers it only inside the
    module's forward hook; recent TRL gathers it around the fused kernel
    (``maybe_gather_lm_head_ctx``), older TRL does not. Under FSDP2 accelerate shards the final
    norm and the LM head as their own unit, whose forward the fused head never runs, so it sees a
    sharded ``DTensor``; TRL 1.16's fused head gathers it (``DTensor.full_tensor``), so FSDP2 is
    safe when the installed TRL does that. FSDP1 (flat parameters) falls back to the logits. DDP
    and ZeRO-1/2 keep whole weights.
    """
    try:
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

        zero3 = bool(is_deepspeed_zero3_enabled())
    except ImportError:  # pragma: no cover - old transformers layout
        zero3 = False
    if zero3:
        try:
            from trl.trainer.utils import maybe_gather_lm_head_ctx  # noqa: F401
        except ImportError:
            return False
        return True
    dist_type = str(getattr(accelerator, "distributed_type", ""))
    if "FSDP" not in dist_type.upper():
        return True
    plugin = getattr(getattr(accelerator, "state", None), "fsdp_plugin", None)
    return getattr(plugin, "fsdp_version", 1) == 2 and _fused_head_gathers_dtensor()


def _fused_head_gathers_dtensor() -> bool:
    """True when TRL's ``add_fused_lm_head`` gathers a DTensor (FSDP2-sharded) LM head itself."""
    try:
        from trl.trainer.utils import add_fused_lm_head
    except ImportError:
        return False
    pending = [add_fused_lm_head.__code__]
    while pending:  # the patched forward is a code object nested in add_fused_lm_head's
        code = pending.pop()
        if "full_tensor" in code.co_names:
            return True
        pending.extend(c for c in code.co_consts if hasattr(c, "co_names"))
    return False


def _has_fused_head(model: Any) -> bool:
    """True when TRL patched ``model.forward`` with its fused LM head (``fused_lm_head=True``)."""
    try:
        from trl.trainer.utils import add_fused_lm_head  # noqa: F401
    except ImportError:
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    fwd = getattr(base, "forward", None)
    code = getattr(getattr(fwd, "__func__", fwd), "__code__", None)
    return code is not None and "fused_lm_head" in code.co_varnames


def igd_sft_trainer_class() -> type:
    """Return the ``IGDSFTTrainer`` class (a subclass of ``trl.SFTTrainer``), built once.

    ``igdbeam.IGDSFTTrainer`` / ``igdbeam.training.sft_trainer.IGDSFTTrainer`` resolve to this
    class on first access, so TRL is imported only when it is used.
    """
    global _IGD_SFT_CLASS
    if _IGD_SFT_CLASS is None:
        _IGD_SFT_CLASS = _build_sft_class()
    return _IGD_SFT_CLASS


def __getattr__(name: str) -> Any:
    """Build ``IGDSFTTrainer`` (which imports TRL) on first access."""
    if name == "IGDSFTTrainer":
        return igd_sft_trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
