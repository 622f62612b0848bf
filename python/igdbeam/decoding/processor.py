"""IGDLogitsProcessor: trie-constrained, IG-reweighted beam search inside ``model.generate``."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import torch
from transformers import LogitsProcessor

from igdbeam.decoding.arguments import check_flag, check_id, check_real
from igdbeam.ops.decode_steps import checked_processor_step
from igdbeam.ops.node_filters import NodeFilters, node_filters

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie


class _CallState(threading.local):
    """What one thread's current ``generate`` call has shown the processor (per thread)."""

    prompt: torch.Tensor | None = None
    last_len: int = -1
    last_nodes: torch.Tensor | None = None
    last_row_status: torch.Tensor | None = None


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
    ``prompt_length`` avoids it.

    **Threads.** One instance may be shared by ``generate`` calls running at the same time in
    different threads: the state of a call (the detected prompt, :attr:`last_nodes`,
    :attr:`last_row_status`) is kept per thread, and the trie and item filters are only read
    (their copies on another device are made once, under a lock). What it does not support is
    two ``generate`` calls interleaved step by step in *one* thread (transformers' ``generate``
    runs each call to its end, so this needs a hand-written loop); give each such call its own
    instance or an explicit ``prompt_length``.

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

    Raises:
        ValueError: (in the constructor, naming the argument) ``alpha`` not a real number in
            [0, 1], ``temperature`` not a finite real > 0, ``item_score_weight`` not finite,
            ``renormalize`` / ``validate`` not a bool; ``eos_token_id`` or ``prompt_length``
            not an integer >= 0 (InvalidIdError: a float, bool or NaN is never truncated).

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
        self.alpha = check_real("alpha", alpha, low=0.0, high=1.0)
        self.renormalize = check_flag("renormalize", renormalize)
        self.temperature = check_real("temperature", temperature, low=0.0, low_open=True)
        self.eos_token_id = None if eos_token_id is None else check_id("eos_token_id", eos_token_id)
        self.prompt_length = (
            None if prompt_length is None else check_id("prompt_length", prompt_length)
        )
        self.validate = None if validate is None else check_flag("validate", validate)
        self.filters = node_filters(
            trie,
            item_mask,
            item_scores,
            item_score_weight=check_real("item_score_weight", item_score_weight),
        )
        self._state = _CallState()
        self._lock = threading.Lock()
        self._on_device: dict[torch.device, tuple[ItemTrie, NodeFilters | None]] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickle / deepcopy support: the per-thread state and the lock are not copied."""
        state = dict(self.__dict__)
        for name in ("_state", "_lock", "_on_device"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._state = _CallState()
        self._lock = threading.Lock()
        self._on_device = {}

    @property
    def last_nodes(self) -> torch.Tensor | None:
        """int32 ``[rows]`` trie node of each row after this thread's last call (-1: off the
        trie), or None before the first call."""
        return self._state.last_nodes

    @property
    def last_row_status(self) -> torch.Tensor | None:
        """int32 ``[rows]`` status of each row after this thread's last call (0 ok, 1 left the
        trie, 2 NaN among the child scores), or None before the first call."""
        return self._state.last_row_status

    def reset(self) -> None:
        """Forget this thread's remembered prompt: its next call starts a new ``generate``
        call."""
        self._state.prompt = None
        self._state.last_len = -1

    def _detect_prompt_length(self, input_ids: torch.Tensor) -> int:
        state = self._state
        rows, cur_len = input_ids.shape
        prompt = state.prompt
        if (
            prompt is not None
            and prompt.shape[0] == rows
            and cur_len == state.last_len + 1
            and prompt.device == input_ids.device
            and torch.equal(input_ids[:, : prompt.shape[1]], prompt)
        ):
            state.last_len = cur_len
            return int(prompt.shape[1])
        state.prompt = input_ids.clone()
        state.last_len = cur_len
        return cur_len

    def _placed(self, device: torch.device) -> tuple[ItemTrie, NodeFilters | None]:
        """The trie and filters on ``device`` (moved once per device, under the lock)."""
        if self.trie.device == device and (self.filters is None or self.filters.device == device):
            return self.trie, self.filters
        placed = self._on_device.get(device)
        if placed is None:
            with self._lock:
                placed = self._on_device.get(device)
                if placed is None:
                    filters = None if self.filters is None else self.filters.to(device)
                    placed = (self.trie.to(device), filters)
                    self._on_device[device] = placed
        return placed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Rewrite ``scores`` ``[rows, vocab]`` in place and return it."""
        if input_ids.device != scores.device:
            raise ValueError(
                f"input_ids are on {input_ids.device} but the scores are on {scores.device}"
            )
        trie, filters = self._placed(scores.device)
        if self.prompt_length is None:
            prompt_length = self._detect_prompt_length(input_ids)
        else:
            prompt_length = self.prompt_length
            if prompt_length > input_ids.shape[1]:
                raise ValueError(
                    f"prompt_length={prompt_length} is longer than input_ids "
                    f"({input_ids.shape[1]} columns)"
                )
        nodes, status = checked_processor_step(
            trie,
            input_ids,
            scores,
            prompt_length=prompt_length,
            alpha=self.alpha,
            temperature=self.temperature,
            renormalize=self.renormalize,
            eos_token_id=self.eos_token_id,
            validate=self.validate,
            **_filter_kwargs(filters, scores.shape[0], scores.device),
        )
        self._state.last_nodes, self._state.last_row_status = nodes, status
        return scores


def _filter_kwargs(filters: NodeFilters | None, rows: int, device: torch.device) -> dict[str, Any]:
    """``filters`` / ``filter_rows`` of :func:`processor_step` for ``rows`` score rows."""
    if filters is None:
        return {}
    prompts = filters.num_rows
    if prompts == 1 or prompts == rows:
        return {"filters": filters}
    if rows % prompts:
        raise ValueError(
            f"the item filters have {prompts} prompt rows but the scores have {rows} rows, "
            "not a multiple"
        )
    filter_rows = torch.arange(rows, device=device) // (rows // prompts)
    return {"filters": filters, "filter_rows": filter_rows}
