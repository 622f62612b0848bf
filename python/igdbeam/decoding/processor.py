"""IGDLogitsProcessor: trie-constrained, IG-reweighted beam search inside ``model.generate``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from transformers import LogitsProcessor

from igdbeam.native.checks import check_unit_interval
from igdbeam.ops.decode_steps import check_temperature, processor_step
from igdbeam.ops.node_filters import node_filters

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie


class IGDLogitsProcessor(LogitsProcessor):
    """Restrict every beam to its trie children and weight them by ``1 - alpha * IG~`` (Eq. 9-10).

    Use it with beam search, which hands processors log-softmax scores::

        out = model.generate(input_ids, attention_mask=mask, num_beams=10,
                             num_return_sequences=10, length_penalty=0.0, do_sample=False,
                             max_new_tokens=trie.max_depth,
                             logits_processor=[IGDLogitsProcessor(trie, alpha=0.1)])

    Each call is one native call for all beams (C++ on CPU, CUDA on GPU): the generated tokens
    ``input_ids[:, prompt_length:]`` of every row are walked to their trie node, the node's
    children keep ``(1 - alpha * IG~(y)) * score(y)`` and every other token gets ``-inf``. A row
    at a leaf (the item is complete) allows only ``eos_token_id`` (score 0) when it is given; a
    row whose tokens left the trie becomes all ``-inf``.

    **Prompt boundary.** With ``prompt_length=None`` the processor finds it per ``generate`` call:
    a call is a *continuation* of the previous one when it has the same number of rows, exactly
    one more column, and the same prompt columns; anything else starts a new ``generate`` call
    whose prompt is the whole ``input_ids``. With left padding every row shares the prompt
    length, so the generated tokens are ``input_ids[:, prompt_length:]``. Nothing else is carried
    from one call to the next, so one instance may serve any number of sequential ``generate``
    calls (including prompts of different lengths); the one ambiguous case, a new call whose
    prompt is the previous call's prompt plus one generated token, is avoided by calling
    :meth:`reset` or passing an explicit ``prompt_length`` (which skips detection). Detection
    compares the prompt columns once per step (a host sync on CUDA); an explicit
    ``prompt_length`` avoids it. One instance must not be shared by concurrent ``generate``
    calls.

    Args:
        trie: the catalog; moved to the scores' device on first use.
        alpha: debiasing strength in [0, 1]; 0 is plain constrained beam search.
        renormalize: renormalise the log-probabilities over the allowed tokens before weighting
            (an option). The default, as the paper's Eq. 9 and the reference code, weights the
            model's own ``log p``: its log-softmax over the full vocabulary.
        temperature: > 0; when not 1 the step uses ``log_softmax(scores / temperature)``.
        eos_token_id: the token allowed after a complete item (use it when the trie's paths do
            not end in the EOS terminator); None: nothing is allowed at a leaf.
        prompt_length: fixed prompt length (columns of ``input_ids``), or None to detect it.
        validate: raise ValueError on NaN scores; default True on CPU, False on CUDA (the check
            costs a host sync there).
        item_mask: bool ``[P, num_items]`` per prompt (or ``[num_items]`` for all), True = may
            be recommended: children with no allowed item below are treated as non-children
            (``-inf``, outside the renormalisation). See :mod:`igdbeam.ops.node_filters`.
        item_scores: float ``[P, num_items]`` (or ``[num_items]``) collaborative log-scores:
            child ``c`` of node ``n`` gains ``item_score_weight * (S(c) - S(n))``, ``S`` the
            log-sum-exp of the allowed item scores below a node.
        item_score_weight: the weight of ``item_scores``.

    With ``P`` prompts, the ``rows`` of ``input_ids`` (``P * num_beams`` in beam search) map to
    prompt ``r // (rows // P)``; ``rows`` must be a multiple of ``P``.
    """

    def __init__(
        self,
        trie: ItemTrie,
        alpha: float = 0.0,
        *,
        renormalize: bool = False,
        temperature: float = 1.0,
        eos_token_id: int | None = None,
        prompt_length: int | None = None,
        validate: bool | None = None,
        item_mask: Any = None,
        item_scores: Any = None,
        item_score_weight: float = 1.0,
    ) -> None:
        self.trie = trie
        self.alpha = check_unit_interval("alpha", alpha)
        self.renormalize = bool(renormalize)
        self.temperature = check_temperature(temperature)
        self.eos_token_id = eos_token_id
        if prompt_length is not None and int(prompt_length) < 0:
            raise ValueError(f"prompt_length must be >= 0, got {prompt_length}")
        self.prompt_length = None if prompt_length is None else int(prompt_length)
        self.validate = validate
        self.last_nodes: torch.Tensor | None = None
        self.last_row_status: torch.Tensor | None = None
        self._prompt: torch.Tensor | None = None
        self._last_len = -1
        self.filters = node_filters(
            trie, item_mask, item_scores, item_score_weight=item_score_weight
        )

    def reset(self) -> None:
        """Forget the remembered prompt: the next call starts a new ``generate`` call."""
        self._prompt = None
        self._last_len = -1

    def _detect_prompt_length(self, input_ids: torch.Tensor) -> int:
        rows, cur_len = input_ids.shape
        prompt = self._prompt
        if (
            prompt is not None
            and prompt.shape[0] == rows
            and cur_len == self._last_len + 1
            and prompt.device == input_ids.device
            and torch.equal(input_ids[:, : prompt.shape[1]], prompt)
        ):
            self._last_len = cur_len
            return int(prompt.shape[1])
        self._prompt = input_ids.clone()
        self._last_len = cur_len
        return cur_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Rewrite ``scores`` ``[rows, vocab]`` in place and return it."""
        if self.trie.device != scores.device:
            self.trie = self.trie.to(scores.device)
        if input_ids.device != scores.device:
            raise ValueError(
                f"input_ids are on {input_ids.device} but the scores are on {scores.device}"
            )
        if self.prompt_length is None:
            prompt_length = self._detect_prompt_length(input_ids)
        else:
            prompt_length = self.prompt_length
            if prompt_length > input_ids.shape[1]:
                raise ValueError(
                    f"prompt_length={prompt_length} is longer than input_ids "
                    f"({input_ids.shape[1]} columns)"
                )
        self.last_nodes, self.last_row_status = processor_step(
            self.trie,
            input_ids,
            scores,
            prompt_length=prompt_length,
            alpha=self.alpha,
            temperature=self.temperature,
            renormalize=self.renormalize,
            eos_token_id=self.eos_token_id,
            validate=self.validate,
            **self._filter_kwargs(scores.shape[0], scores.device),
        )
        return scores

    def _filter_kwargs(self, rows: int, device: torch.device) -> dict[str, Any]:
        """``filters`` / ``filter_rows`` of :func:`processor_step` for ``rows`` score rows."""
        if self.filters is None:
            return {}
        if self.filters.device != device:
            self.filters = self.filters.to(device)
        prompts = self.filters.num_rows
        if prompts == 1 or prompts == rows:
            return {"filters": self.filters}
        if rows % prompts:
            raise ValueError(
                f"the item filters have {prompts} prompt rows but the scores have {rows} rows, "
                "not a multiple"
            )
        filter_rows = torch.arange(rows, device=device) // (rows // prompts)
        return {"filters": self.filters, "filter_rows": filter_rows}
