"""IGD fine-tuning with ``transformers.Trainer`` and TRL's ``SFTTrainer``.

* :func:`make_compute_loss_func` returns a ``compute_loss_func`` for a stock ``Trainer``. It
  honours ``num_items_in_batch`` (the step's completion-token count), so gradients do not grow
  with gradient accumulation: when ``compute_loss_func`` is set, the Trainer does not divide by the
  accumulation steps, and a loss that normalises per micro-batch (the public reference trainer)
  makes the gradient scale with ``gradient_accumulation_steps``. Under data parallelism it gives
  the loss of the whole global batch when ``average_tokens_across_devices=True`` (the default of
  recent transformers: the Trainer gathers the token count and multiplies the loss by the
  process count).
* :class:`IGDTrainer` (a ``Trainer``) additionally normalises by the step's *weight* sum over the
  micro-batches of every process (so the accumulated, DDP-averaged gradient is the gradient of
  the reference loss of the whole global step, whatever ``average_tokens_across_devices`` says),
  supports the CFT baseline, and logs at evaluation the mean loss of zero-IG and of positive-IG
  tokens (the paper's "bias in SFT" analysis) as ``eval_loss_zero_ig`` / ``eval_loss_pos_ig``.
* :class:`IGDSFTTrainer` is TRL's ``SFTTrainer`` with ``compute_loss`` overridden (TRL deprecates
  ``compute_loss_func`` from 1.15); it scores tokens with TRL's fused LM head (per-token
  log-probs, no full logits) when available.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import transformers

from igdbeam.native.checks import check_unit_interval
from igdbeam.ops.label_weights import (
    OFF_TRIE_POLICIES,
    check_labels,
    label_token_weights,
    positional_token_weights,
)
from igdbeam.training.loss import (
    cft_loss,
    igd_loss,
    igd_loss_from_log_probs,
    pos_loss,
    shift_labels,
    token_cross_entropy,
    weighted_token_mean,
)

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie

__all__ = [
    "IGDLossFunc",
    "IGDSFTTrainer",  # noqa: F822 - built lazily by __getattr__
    "IGDTrainer",
    "igd_sft_trainer_class",
    "make_compute_loss_func",
]

LOSS_KINDS = ("igd", "pos", "ce", "cft")
CF_KEYS = ("cf_input_ids", "cf_attention_mask", "cf_labels")


class IGDLossFunc:
    """A ``compute_loss_func(outputs, labels, num_items_in_batch)`` for ``transformers.Trainer``.

    ``labels`` are the unshifted input labels (the loss shifts them). One instance may serve one
    trainer at a time; it moves the trie to the logits' device on first use and caches it.
    While :meth:`start_collecting` is active it also accumulates (detached) the summed token loss
    and count of zero-IG and of positive-IG completion tokens.

    Args:
        trie: the item trie (needed for ``"igd"`` and for the zero-IG / positive-IG statistics).
        beta: weight of zero-IG tokens (``"igd"``) or of the last token (``"pos"``).
        loss: ``"igd"``, ``"pos"``, ``"ce"`` (plain token-mean CE) or ``"cft"``.
        alpha: weight of the counterfactual term (``"cft"`` only).
        ignore_index: label value of non-completion positions.
        off_trie: policy for completions that leave the trie (see ``label_token_weights``).
        validate: check that labels lie in the vocabulary ``"always"``, only on the ``"first"``
            call (default: the check costs a host sync per call on GPU, and CUDA's
            cross-entropy asserts on bad labels anyway) or ``"never"``.

    Training with ``"igd"`` also counts, on the device and without synchronising, the rows whose
    completion left the trie; :meth:`pop_left_trie_rows` reads and resets the count (the trainers
    log it as ``igd_left_trie_rows``).
    """

    def __init__(
        self,
        trie: ItemTrie | None,
        beta: float = 0.1,
        *,
        loss: str = "igd",
        alpha: float = 1.0,
        ignore_index: int = -100,
        off_trie: str = "uniform",
        validate: str = "first",
    ) -> None:
        """Validate the options; see the class docstring."""
        if loss not in LOSS_KINDS:
            raise ValueError(f"loss must be one of {LOSS_KINDS}, got {loss!r}")
        if loss == "igd" and trie is None:
            raise ValueError("loss='igd' needs a trie")
        if off_trie not in OFF_TRIE_POLICIES:
            raise ValueError(
                f"off_trie must be one of {sorted(OFF_TRIE_POLICIES)}, got {off_trie!r}"
            )
        if validate not in ("always", "first", "never"):
            raise ValueError(f"validate must be 'always', 'first' or 'never', got {validate!r}")
        self.validate = validate
        self._validated = False
        self._left_rows: torch.Tensor | None = None
        self.trie = trie
        self.beta = check_unit_interval("beta", beta)
        self.kind = loss
        self.alpha = float(alpha)
        self.ignore_index = int(ignore_index)
        self.off_trie = off_trie
        self.pending_cf_outputs: Any = None
        self._stats: torch.Tensor | None = None
        self._collecting = False

    # ------------------------------------------------------------------ helpers
    def trie_on(self, device: torch.device) -> ItemTrie:
        """Return the trie on ``device`` (moved once, then cached)."""
        assert self.trie is not None
        if self.trie.device != device:
            self.trie = self.trie.to(device)
        return self.trie

    def token_weights(self, labels: torch.Tensor) -> torch.Tensor:
        """Weights ``[B, L - 1]`` of the predicted tokens ``labels[:, 1:]`` (unshifted labels).

        IGD walks the unshifted labels, so a completion starting at position 0 is walked from
        its first token; ``"pos"`` runs from 1 on the first predicted completion token; ``"ce"``
        and ``"cft"`` weigh every completion token 1.
        """
        target = labels[:, 1:]
        if self.kind == "igd":
            return label_token_weights(
                labels,
                self.trie_on(labels.device),
                self.beta,
                ignore_index=self.ignore_index,
                off_trie=self.off_trie,
                validate=False,
            ).weight[:, 1:]
        if self.kind == "pos":
            return positional_token_weights(target, self.beta, ignore_index=self.ignore_index)
        return (target != self.ignore_index).to(torch.float32)

    def step_denominator(self, labels: list[torch.Tensor]) -> torch.Tensor:
        """Sum of this loss's token weights over the micro-batches (unshifted labels) of a step."""
        return sum(self.token_weights(t).sum() for t in labels)  # type: ignore[return-value]

    def _check_now(self) -> bool:
        """Whether this call validates the labels (see ``validate``)."""
        if self.validate == "always" or (self.validate == "first" and not self._validated):
            self._validated = True
            return True
        return False

    def _count_left(self, token_weights: Any) -> None:
        if token_weights is None or self._collecting:
            return
        n = token_weights.left_trie.sum()
        self._left_rows = n if self._left_rows is None else self._left_rows + n

    def pop_left_trie_rows(self) -> int | None:
        """Rows whose completion left the trie since the last call (None: no IGD loss ran)."""
        n, self._left_rows = self._left_rows, None
        return None if n is None else int(n)

    # ------------------------------------------------------------------ statistics
    def start_collecting(self) -> None:
        """Reset and start accumulating zero-IG / positive-IG token-loss statistics."""
        self._stats = None
        self._collecting = True

    def stop_collecting(self) -> torch.Tensor | None:
        """Stop collecting; return ``[sum_loss_zero, n_zero, sum_loss_pos, n_pos]`` or None."""
        self._collecting = False
        stats, self._stats = self._stats, None
        return stats

    def _collect(self, token_loss: torch.Tensor, labels: torch.Tensor) -> None:
        """Accumulate the statistics; ``token_loss[:, t]`` is the loss of ``labels[:, t + 1]``."""
        if not self._collecting or self.trie is None:
            return
        tw = label_token_weights(
            labels,
            self.trie_on(labels.device),
            1.0,
            ignore_index=self.ignore_index,
            validate=False,
        )
        ok = (labels[:, 1:] != self.ignore_index) & ~tw.left_trie[:, None]
        zero = ok & tw.zero_ig[:, 1:]
        pos = ok & ~tw.zero_ig[:, 1:]
        tl = token_loss[:, : labels.shape[1] - 1].detach().float()
        stats = torch.stack(
            [(tl * zero).sum(), zero.sum().float(), (tl * pos).sum(), pos.sum().float()]
        )
        self._stats = stats if self._stats is None else self._stats + stats

    # ------------------------------------------------------------------ the loss
    def __call__(
        self,
        outputs: Any,
        labels: torch.Tensor,
        num_items_in_batch: int | float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss from the model outputs (``outputs.logits``) and unshifted labels."""
        if labels is None:
            raise ValueError("the IGD loss needs labels; the batch has none")
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs.logits
        labels = labels.to(logits.device)
        target = shift_labels(labels, self.ignore_index)
        common = {
            "ignore_index": self.ignore_index,
            "num_items_in_batch": num_items_in_batch,
            "validate": self._check_now(),
        }
        if self.kind == "cft":
            cf = self.pending_cf_outputs
            self.pending_cf_outputs = None
            if cf is None:
                raise ValueError(
                    "loss='cft' needs the history-free prompt: use IGDTrainer with "
                    "igdbeam.CFTCollator (batch keys cf_input_ids, cf_attention_mask, cf_labels)"
                )
            cf_logits, cf_labels = cf
            loss = cft_loss(
                logits, labels, cf_logits, cf_labels.to(logits.device), self.alpha, **common
            )
            if self._collecting:
                self._collect(
                    token_cross_entropy(logits, target, ignore_index=self.ignore_index), labels
                )
            return loss
        if self.kind == "igd":
            loss, out = igd_loss(
                logits,
                labels,
                self.trie_on(logits.device),
                self.beta,
                off_trie=self.off_trie,
                return_output=True,
                **common,
            )
            self._count_left(out.token_weights)
        elif self.kind == "pos":
            loss, out = pos_loss(logits, labels, self.beta, return_output=True, **common)
        else:
            if common["validate"]:
                check_labels(labels, logits.shape[-1], self.ignore_index)
            ce = token_cross_entropy(logits, target, ignore_index=self.ignore_index)
            loss, _ = weighted_token_mean(
                ce, (target != self.ignore_index).float(), num_items_in_batch
            )
            self._collect(ce, labels)
            return loss
        self._collect(out.token_loss, labels)
        return loss

    def loss_from_log_probs(
        self,
        log_probs: torch.Tensor,
        labels: torch.Tensor,
        num_items_in_batch: int | float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss from per-token log-probs ``[B, L - 1]`` of unshifted labels ``[B, L]``.

        ``log_probs[:, t]`` is the log-probability of ``labels[:, t + 1]`` (TRL's fused LM head).
        """
        labels = labels.to(log_probs.device)
        if self.kind == "igd":
            loss, out = igd_loss_from_log_probs(
                log_probs,
                labels,
                self.trie_on(log_probs.device),
                self.beta,
                ignore_index=self.ignore_index,
                num_items_in_batch=num_items_in_batch,
                off_trie=self.off_trie,
                validate=self._check_now(),
                return_output=True,
            )
            self._count_left(out.token_weights)
            self._collect(out.token_loss, labels)
            return loss
        if self.kind == "cft":
            raise ValueError("loss='cft' needs full logits; use IGDTrainer")
        nll = torch.where(labels[:, 1:] != self.ignore_index, -log_probs.float(), 0.0)
        loss, _ = weighted_token_mean(nll, self.token_weights(labels), num_items_in_batch)
        self._collect(nll, labels)
        return loss


def make_compute_loss_func(
    trie: ItemTrie | None,
    beta: float = 0.1,
    *,
    loss: str = "igd",
    ignore_index: int = -100,
    off_trie: str = "uniform",
    validate: str = "first",
) -> IGDLossFunc:
    """Return a ``compute_loss_func`` for ``transformers.Trainer(compute_loss_func=...)``.

    The function is ``f(outputs, labels, num_items_in_batch)``: it shifts the labels itself and
    divides by ``num_items_in_batch`` when the Trainer passes it (the step's completion-token
    count), so the gradient is independent of gradient accumulation. With a stock Trainer the
    loss is therefore ``sum w CE / N_tokens``; :class:`IGDTrainer` divides by the step's weight sum
    instead (the reference ``Omega``). ``loss`` is ``"igd"``, ``"pos"`` or ``"ce"`` (``"cft"``
    needs :class:`IGDTrainer`); ``off_trie`` and ``validate`` are as in :class:`IGDLossFunc`.
    """
    if loss == "cft":
        raise ValueError("loss='cft' needs a second forward pass; use igdbeam.IGDTrainer")
    return IGDLossFunc(
        trie, beta, loss=loss, ignore_index=ignore_index, off_trie=off_trie, validate=validate
    )


class _IGDTrainerMixin:
    """Shared by IGDTrainer and IGDSFTTrainer: weighted step denominator and eval statistics."""

    igd_loss_func: IGDLossFunc
    igd_normalize: str

    def _init_igd(
        self,
        trie: ItemTrie | None,
        beta: float,
        loss: str,
        alpha: float,
        off_trie: str,
        normalize: str,
        ignore_index: int,
        validate: str = "first",
    ) -> None:
        if normalize not in ("weights", "tokens"):
            raise ValueError(f"normalize must be 'weights' or 'tokens', got {normalize!r}")
        self.igd_loss_func = IGDLossFunc(
            trie,
            beta,
            loss=loss,
            alpha=alpha,
            ignore_index=ignore_index,
            off_trie=off_trie,
            validate=validate,
        )
        self.igd_normalize = normalize

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> Any:
        """The step's denominator over *all* processes: the weight sum ``Omega`` of the step.

        ``batch_samples`` are this process's micro-batches of one optimizer step. The Trainer's
        count (``base``: completion tokens, over every process when
        ``average_tokens_across_devices``) is rescaled to this loss's denominator summed over the
        micro-batches of every process: the weight sum (``normalize="weights"``, ``"igd"`` /
        ``"pos"``) or the token count. The per-process sums are always all-gathered (two scalars
        per step), whatever ``average_tokens_across_devices`` says, and :meth:`_igd_loss_scale`
        supplies the matching ``world_size`` factor, so that under data parallelism the averaged
        gradient is the gradient of the loss of the whole global batch.
        """
        base = super()._get_num_items_in_batch(batch_samples, device)  # type: ignore[misc]
        if base is None:
            return None
        ignore = self.igd_loss_func.ignore_index
        try:
            labels = [b["labels"].to(device) for b in batch_samples]
        except (KeyError, TypeError, AttributeError):
            return base
        tokens = sum((t[:, 1:] != ignore).sum() for t in labels).to(device, torch.float64)
        if self.igd_normalize == "weights" and self.igd_loss_func.kind in ("igd", "pos"):
            den = self.igd_loss_func.step_denominator(labels).to(device, torch.float64)
        else:
            den = tokens
        local = torch.stack([den, tokens])
        total = local
        args = self.args  # type: ignore[attr-defined]
        if args.world_size > 1:
            total = self.accelerator.gather(local[None]).sum(0)  # type: ignore[attr-defined]
        # `base` counts the tokens of every process when transformers averages across devices
        # (then divided by the TP / CP / SP sizes; one copy per GPU under DataParallel), else
        # this process's tokens: rescale whichever count it is to the global denominator.
        counted = total[1] if args.average_tokens_across_devices else local[1]
        scale = torch.where(counted > 0, total[0] / counted.clamp(min=1), counted.new_ones(()))
        return (base * scale).to(torch.float32)

    def _igd_loss_scale(self, num_items_in_batch: Any, transformers_scaled: bool) -> int:
        """Factor that makes DDP's gradient average the gradient of the global-batch loss.

        With a denominator over every process (see :meth:`_get_num_items_in_batch`), each
        process's loss is its share of the global sum divided by the global ``Omega``; DDP
        averages the gradients over the processes, so the loss must also be multiplied by their
        number (``transformers.Trainer`` does that itself when ``average_tokens_across_devices``;
        ``transformers_scaled`` says whether it did).
        """
        args = self.args  # type: ignore[attr-defined]
        if num_items_in_batch is None or args.world_size <= 1 or transformers_scaled:
            return 1
        get_tp = getattr(self, "get_tp_size", None)
        tp = get_tp() if callable(get_tp) else 1
        return self.accelerator.num_processes // max(int(tp), 1)  # type: ignore[attr-defined]

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add ``igd_left_trie_rows`` (rows off the trie since the last log) to training logs."""
        if "loss" in logs:
            n = self.igd_loss_func.pop_left_trie_rows()
            if n is not None:
                logs["igd_left_trie_rows"] = n
        super().log(logs, *args, **kwargs)  # type: ignore[misc]

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        """Run the Trainer's evaluation loop and add the zero-IG / positive-IG mean token losses."""
        self.igd_loss_func.start_collecting()
        try:
            output = super().evaluation_loop(*args, **kwargs)  # type: ignore[misc]
        finally:
            stats = self.igd_loss_func.stop_collecting()
        prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
        if stats is not None:
            acc = self.accelerator  # type: ignore[attr-defined]
            if acc.num_processes > 1:
                stats = acc.gather(stats[None]).sum(0)
            s = stats.tolist()
            if s[1] > 0:
                output.metrics[f"{prefix}_loss_zero_ig"] = s[0] / s[1]
            if s[3] > 0:
                output.metrics[f"{prefix}_loss_pos_ig"] = s[2] / s[3]
            output.metrics[f"{prefix}_zero_ig_token_share"] = s[1] / max(s[1] + s[3], 1.0)
        return output


class IGDTrainer(_IGDTrainerMixin, transformers.Trainer):
    """``transformers.Trainer`` fine-tuning with the IGD loss (or a baseline).

    Args:
        *args, **kwargs: as ``transformers.Trainer`` (do not pass ``compute_loss_func``).
        trie: the item trie (required for ``loss="igd"``; without it no zero-IG statistics).
        beta: weight of zero-IG tokens (``"igd"``) or of the last token (``"pos"``).
        loss: ``"igd"`` (default), ``"pos"``, ``"ce"`` or ``"cft"`` (needs
            :class:`igdbeam.CFTCollator` and ``remove_unused_columns=False``).
        alpha: weight of the counterfactual term of ``"cft"``.
        off_trie: policy for completions that leave the trie.
        normalize: ``"weights"`` (default): divide by the weight sum of the whole optimizer
            step (all micro-batches of all processes), so the accumulated loss is exactly the
            reference loss of the global step and does not depend on the split into
            micro-batches or processes; ``"tokens"``: by its token count, like
            :func:`make_compute_loss_func`.
        ignore_index: label value of prompt and padding positions.
        validate: label checks, ``"first"`` (default), ``"always"`` or ``"never"`` (see
            :class:`IGDLossFunc`).

    Training logs include ``igd_left_trie_rows``, the number of rows whose completion left the
    trie since the previous log. At evaluation it logs ``eval_loss_zero_ig`` and
    ``eval_loss_pos_ig``: the mean token cross-entropy of zero-IG and of positive-IG completion
    tokens (rows that leave the trie are left out), and ``eval_zero_ig_token_share``.
    """

    def __init__(
        self,
        *args: Any,
        trie: ItemTrie | None = None,
        beta: float = 0.1,
        loss: str = "igd",
        alpha: float = 1.0,
        off_trie: str = "uniform",
        normalize: str = "weights",
        ignore_index: int = -100,
        validate: str = "first",
        **kwargs: Any,
    ) -> None:
        """Build the trainer; see the class docstring."""
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError("IGDTrainer sets compute_loss_func itself; pass loss=... instead")
        self._init_igd(trie, beta, loss, alpha, off_trie, normalize, ignore_index, validate)
        kwargs["compute_loss_func"] = self.igd_loss_func
        super().__init__(*args, **kwargs)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """The Trainer's compute_loss; for ``"cft"`` it first runs the history-free prompt."""
        cf_inputs = {k: inputs.pop(k) for k in CF_KEYS if k in inputs}
        if self.igd_loss_func.kind == "cft":
            if "cf_input_ids" not in cf_inputs or "cf_labels" not in cf_inputs:
                raise ValueError(
                    "loss='cft' needs cf_input_ids / cf_labels in the batch: use "
                    "igdbeam.CFTCollator and TrainingArguments(remove_unused_columns=False)"
                )
            cf_out = model(
                input_ids=cf_inputs["cf_input_ids"],
                attention_mask=cf_inputs.get("cf_attention_mask"),
                use_cache=False,
            )
            self.igd_loss_func.pending_cf_outputs = (cf_out.logits, cf_inputs["cf_labels"])
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        # transformers multiplies by the process count itself when averaging across devices
        scale = self._igd_loss_scale(
            num_items_in_batch, bool(self.args.average_tokens_across_devices)
        )
        if scale == 1:
            return result
        if return_outputs:
            return result[0] * scale, result[1]
        return result * scale


def _sft_trainer_class() -> type:
    try:
        import trl
    except ImportError as exc:  # pragma: no cover - trl is optional
        raise ImportError("IGDSFTTrainer needs TRL: pip install trl") from exc
    return trl.SFTTrainer


_IGD_SFT_CLASS: type | None = None


def _build_sft_class() -> type:
    base = _sft_trainer_class()

    class _IGDSFTTrainer(_IGDTrainerMixin, base):  # type: ignore[misc, valid-type]
        """TRL ``SFTTrainer`` fine-tuning with the IGD loss (or the Pos / plain CE baselines).

        Takes ``SFTTrainer``'s arguments plus ``trie``, ``beta``, ``loss`` (``"igd"``, ``"pos"``
        or ``"ce"``), ``off_trie``, ``normalize`` and ``ignore_index`` as :class:`IGDTrainer`.
        ``compute_loss`` is overridden (TRL deprecates ``compute_loss_func`` from 1.15); when TRL's
        fused LM head is present (recent SFTTrainers patch the model with it) the loss comes from
        its per-token log-probabilities without materialising the full logits, otherwise from the
        logits. ``fused_head``: ``None`` (default) uses the fused head when TRL added it and the
        LM head is not sharded in a way the installed TRL cannot gather (DeepSpeed ZeRO-3 without
        TRL's gather context, or FSDP), ``False`` always uses the logits, ``True`` requires the
        fused head. A ``peft.PeftModel`` (or ``peft_config=``) trains its adapter only; the
        label weights and the loss are the same as for the full model. Evaluation logs
        ``eval_loss_zero_ig`` / ``eval_loss_pos_ig`` like IGDTrainer.
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
            inputs["use_cache"] = False
            labels = inputs["labels"]
            fused = self.igd_fused_head
            if fused:
                outputs = model(**inputs, fused_lm_head=True)
                loss = self.igd_loss_func.loss_from_log_probs(
                    outputs.log_probs, labels, num_items_in_batch
                )
                mask = outputs.label_mask
                self._log_sft_metrics(mode, outputs, mask)
            else:
                outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
                loss = self.igd_loss_func(outputs, labels, num_items_in_batch)
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
    (``maybe_gather_lm_head_ctx``), older TRL does not. FSDP shards it too; the full-logits path is
    used there. DDP and ZeRO-1/2 keep whole weights.
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
    return "FSDP" not in dist_type.upper()


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

    ``igdbeam.IGDSFTTrainer`` / ``igdbeam.training.trainer.IGDSFTTrainer`` resolve to this class on first
    access, so TRL is imported only when it is used.
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
