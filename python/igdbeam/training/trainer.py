"""IGD fine-tuning with ``transformers.Trainer``.

:class:`IGDTrainer` (a ``Trainer``) trains with :class:`~igdbeam.training.loss_func.IGDLossFunc`
and normalises by the step's *weight* sum over the micro-batches of every process (so the
accumulated, DDP-averaged gradient is the gradient of the reference loss of the whole global
step, whatever ``average_tokens_across_devices`` says), supports the CFT baseline, and logs at
evaluation the mean loss of zero-IG and of positive-IG tokens (the paper's "bias in SFT"
analysis) as ``eval_loss_zero_ig`` / ``eval_loss_pos_ig``. The shared machinery lives in
:class:`IGDTrainerMixin`, which :mod:`igdbeam.training.sft_trainer` reuses for TRL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import transformers

from igdbeam.training.loss_func import IGDLossFunc
from igdbeam.training.loss_metrics import ig_split_metrics

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie

__all__ = ["IGDTrainer", "IGDTrainerMixin"]

CF_KEYS = ("cf_input_ids", "cf_attention_mask", "cf_labels")


class IGDTrainerMixin:
    """Shared by IGDTrainer and IGDSFTTrainer: the loss object, the weighted step denominator
    (over every process), the DDP loss scale, and the training / evaluation metrics.
    """

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
        alpha: weight of the counterfactual term of ``"cft"``.
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
