"""IGD fine-tuning with ``transformers.Trainer``.

:class:`IGDTrainer` (a ``Trainer``) trains with :class:`~igdbeam.training.loss_func.IGDLossFunc`
and normalises by the step's *weight* sum over the micro-batches of every process (so the
accumulated, DDP-averaged gradient is the gradient of the reference loss of the whole global
step, whatever ``average_tokens_across_devices`` says), supports the CFT baseline, and logs at
evaluation the mean loss of zero-IG and of positive-IG tokens (the paper's "bias in SFT"
analysis) as ``eval_loss_zero_ig`` / ``eval_loss_pos_ig``. The shared machinery lives in
:class:`IGDTrainerMixin`, which :mod:`igdbeam.training.sft_trainer` reuses for TRL.

How the Trainer scales the loss (transformers 5.x ``Trainer.training_step``): a loss that is not
"scaled for gradient accumulation" is divided by the number of micro-batches, and under
DeepSpeed the engine's own division is turned off (``scale_wrt_gas=False``), so the Trainer's
rule is the only one on every engine (DDP, DeepSpeed ZeRO, FSDP). The IGD loss of a micro-batch
is already a share of the whole step (its weighted sum over the step's global denominator), so
the trainers set ``loss_is_scaled_for_ga = True`` and always pass that denominator; the
per-process factor for the data-parallel gradient average is
:meth:`IGDTrainerMixin._igd_loss_scale`. The token weights of each micro-batch are computed once,
for the denominator, and travel with the batch (key :data:`WEIGHTS_KEY`) to ``compute_loss``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
import transformers

from igdbeam.training.loss import resolve_cft_weight
from igdbeam.training.loss_func import IGDLossFunc, MicroBatchWeights
from igdbeam.training.loss_metrics import ig_split_metrics

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie

__all__ = ["WEIGHTS_KEY", "IGDTrainer", "IGDTrainerMixin"]

CF_KEYS = ("cf_input_ids", "cf_attention_mask", "cf_labels")
# Batch key under which _get_num_items_in_batch leaves each micro-batch's token weights for
# compute_loss (a MicroBatchWeights: not a tensor, so the Trainer neither moves nor casts it).
WEIGHTS_KEY = "igd_micro_batch_weights"


class IGDTrainerMixin:
    """Shared by IGDTrainer and IGDSFTTrainer: the loss object, the weighted step denominator
    (over every process), the DDP loss scale, and the training / evaluation metrics.
    """

    igd_loss_func: IGDLossFunc
    igd_normalize: str
    # The loss is divided by the step's denominator over every micro-batch and process (read
    # by transformers' training_step: it must not divide by the accumulation steps again).
    loss_is_scaled_for_ga: bool | None = True

    def _init_igd(
        self,
        trie: ItemTrie | None,
        beta: float,
        loss: str,
        cft_weight: float,
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
            cft_weight=cft_weight,
            ignore_index=ignore_index,
            off_trie=off_trie,
            validate=validate,
        )
        self.igd_normalize = normalize

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> Any:
        """The step's denominator over *all* processes: the weight sum ``Omega`` of the step.

        ``batch_samples`` are this process's micro-batches of one optimizer step. Each one's
        token weights are computed here, once (one native label-weights call for IGD), and left
        in the batch under :data:`WEIGHTS_KEY` for ``compute_loss``. The denominator is this
        loss's weight sum (``normalize="weights"``, ``"igd"`` / ``"pos"``) or token count, summed
        over the micro-batches of every process: the per-process sums are always all-gathered
        (two scalars per step), whatever ``average_tokens_across_devices`` says, and
        :meth:`_igd_loss_scale` supplies the matching ``world_size`` factor, so that under data
        parallelism (DDP, DeepSpeed, FSDP) the averaged gradient is the gradient of the loss of
        the whole global batch. When transformers counted tokens itself (``base``), that count is
        rescaled, which keeps its TP / CP / SP and DataParallel adjustments.
        """
        base = super()._get_num_items_in_batch(batch_samples, device)  # type: ignore[misc]
        try:
            labels = [b["labels"] for b in batch_samples]
        except (KeyError, TypeError):
            return base
        if not labels or not all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in labels):
            return base
        func = self.igd_loss_func
        by_weight = self.igd_normalize == "weights" and func.kind in ("igd", "pos")
        dens, tokens = [], []
        for batch, t in zip(batch_samples, labels, strict=True):
            t = t.to(device)
            weights = func.micro_batch_weights(t)
            # (an immutable batch keeps no weights: compute_loss then walks its labels again)
            with contextlib.suppress(TypeError):
                batch[WEIGHTS_KEY] = weights
            tokens.append((t[:, 1:] != func.ignore_index).sum().to(torch.float64))
            dens.append(weights.weight.sum(dtype=torch.float64) if by_weight else tokens[-1])
        local = torch.stack([torch.stack(dens).sum(), torch.stack(tokens).sum()])
        total = local
        args = self.args  # type: ignore[attr-defined]
        if args.world_size > 1:
            total = self.accelerator.gather(local[None]).sum(0)  # type: ignore[attr-defined]
        if base is None:  # transformers did not count (a model without loss kwargs)
            return total[0].to(torch.float32)
        # `base` counts the tokens of every process when transformers averages across devices
        # (then divided by the TP / CP / SP sizes; one copy per GPU under DataParallel), else
        # this process's tokens: rescale whichever count it is to the global denominator.
        counted = total[1] if args.average_tokens_across_devices else local[1]
        scale = torch.where(counted > 0, total[0] / counted.clamp(min=1), counted.new_ones(()))
        return (base * scale).to(torch.float32)

    @staticmethod
    def _pop_weights(inputs: dict[str, Any]) -> MicroBatchWeights | None:
        """Remove and return the micro-batch weights that :meth:`_get_num_items_in_batch` left."""
        weights = inputs.pop(WEIGHTS_KEY, None)
        return weights if isinstance(weights, MicroBatchWeights) else None

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
            output.metrics.update(ig_split_metrics(stats, prefix))
        return output


class IGDTrainer(IGDTrainerMixin, transformers.Trainer):
    """``transformers.Trainer`` fine-tuning with the IGD loss (or a baseline).

    Args:
        *args, **kwargs: as ``transformers.Trainer`` (do not pass ``compute_loss_func``).
        trie: the item trie (required for ``loss="igd"``; without it no zero-IG statistics).
        beta: weight of zero-IG tokens (``"igd"``) or of the last token (``"pos"``).
        loss: ``"igd"`` (default), ``"pos"``, ``"ce"`` or ``"cft"`` (needs
            :class:`igdbeam.CFTCollator` and ``remove_unused_columns=False``).
        cft_weight: weight of the counterfactual term of ``"cft"``, ``>= 0`` (``alpha``, its old
            name, still works and warns: ``alpha`` is IGD's decoding strength).
        off_trie: policy for completions that leave the trie.
        normalize: ``"weights"`` (default): divide by the weight sum of the whole optimizer
            step (all micro-batches of all processes), so the accumulated loss is exactly the
            reference loss of the global step and does not depend on the split into
            micro-batches or processes; ``"tokens"``: by its token count, like
            :func:`~igdbeam.training.loss_func.make_compute_loss_func`.
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
        cft_weight: float = 1.0,
        off_trie: str = "uniform",
        normalize: str = "weights",
        ignore_index: int = -100,
        validate: str = "first",
        alpha: float | None = None,
        **kwargs: Any,
    ) -> None:
        """Build the trainer; see the class docstring."""
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError("IGDTrainer sets compute_loss_func itself; pass loss=... instead")
        cft_weight = resolve_cft_weight(cft_weight, alpha, "IGDTrainer")
        self._init_igd(trie, beta, loss, cft_weight, off_trie, normalize, ignore_index, validate)
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
        weights = self._pop_weights(inputs)
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
        # the loss function takes this micro-batch's weights on its next call (Trainer.compute_loss
        # calls it with outputs, labels and num_items_in_batch only)
        self.igd_loss_func.pending_weights = weights
        try:
            result = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        finally:
            self.igd_loss_func.pending_weights = None
        # transformers multiplies by the process count itself when averaging across devices
        scale = self._igd_loss_scale(
            num_items_in_batch, bool(self.args.average_tokens_across_devices)
        )
        if scale == 1:
            return result
        if return_outputs:
            return result[0] * scale, result[1]
        return result * scale
