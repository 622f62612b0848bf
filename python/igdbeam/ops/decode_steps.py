"""The two decode ops (C++ for CPU tensors, CUDA for GPU tensors, through ``run_op``).

* :func:`processor_step` — the logits-processor step: constrain every beam's scores to its trie
  children and reweight them by ``1 - alpha * IG~`` (spec section 4), in place.
* :func:`beam_step` — the fused step of :func:`igdbeam.generate`: log-softmax, gather of each
  beam's children, reweighting, per-row top-C and node advance.

Both check their arguments here (types, shapes, dtypes, devices, ranges) and then call the
registered op (``torch.ops.igdbeam.processor_step`` / ``beam_step``, see
:mod:`igdbeam.native.torch_ops`), whose kernel checks what needs the tensors' values (the trie's
token range, filter rows, NaN scores) before native code sees a pointer. Both compile with
``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch

from igdbeam.errors import VocabularyError, as_index
from igdbeam.native.checks import LOGIT_DTYPES, check_tensor, check_unit_interval
from igdbeam.native.torch_ops import BEAM_STEP, PROCESSOR_STEP, trie_operands
from igdbeam.native.value_checks import check_token_range
from igdbeam.ops.node_filters import NodeFilters, filter_operands

if TYPE_CHECKING:
    from igdbeam.trie.item_trie import ItemTrie

ROW_OK, ROW_LEFT_TRIE, ROW_NAN = 0, 1, 2


class BeamStepResult(NamedTuple):
    """The ``num_candidates`` best continuations of each batch row, best first.

    Every field is ``[batch, num_candidates]``; pads (fewer candidates than asked for) have
    ``score = logp = -inf`` and ``beam = token = node = -1``.
    """

    score: torch.Tensor  # float32: beam_score + (1 - alpha * IG~) * logp
    logp: torch.Tensor  # float32: the unweighted log-probability (renormalised if asked)
    beam: torch.Tensor  # int32: beam index within the batch row
    token: torch.Tensor  # int64: token id
    node: torch.Tensor  # int32: trie node reached


def check_temperature(temperature: float) -> float:
    """Return ``temperature`` as a float, or raise ValueError unless it is positive and finite."""
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}") from None
    if not (math.isfinite(t) and t > 0.0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return t


def check_vocab(trie: ItemTrie, vocab: int) -> None:
    """Raise VocabularyError when ``trie`` cannot index a vocabulary of ``vocab`` tokens.

    A trie built for a larger vocabulary, or holding a token id ``>= vocab``, belongs to another
    tokenizer; a negative token id below the root is never valid (the kernels index score rows
    with the trie's tokens). A trie built for a smaller vocabulary is accepted: models often pad
    their output layer beyond the tokenizer's size (e.g. Qwen2: 151,936 logits for 151,665
    tokens). The token range is read once per trie (one device sync on CUDA) and cached.
    """
    _check_vocab_size(trie, vocab)
    check_token_range(trie.token, vocab)


def _check_vocab_size(trie: ItemTrie, vocab: int) -> None:
    """The part of :func:`check_vocab` that reads no tensor (the op's kernel checks the trie's
    token range)."""
    if trie.vocab_size is not None and trie.vocab_size > vocab:
        raise VocabularyError(
            f"the trie was built for a vocabulary of {trie.vocab_size} tokens but the scores have "
            f"{vocab} columns; build the trie with the model's own tokenizer"
        )


def _check_eos(eos_token_id: int | None, vocab: int) -> int:
    if eos_token_id is None:
        return -1
    eos = as_index(eos_token_id, "eos_token_id")
    if eos >= vocab:
        raise VocabularyError(f"eos_token_id {eos} is outside the vocabulary [0, {vocab})")
    return eos if eos >= 0 else -1


def processor_step(
    trie: ItemTrie,
    input_ids: torch.Tensor,
    scores: torch.Tensor,
    *,
    prompt_length: int,
    alpha: float = 0.0,
    temperature: float = 1.0,
    renormalize: bool = False,
    eos_token_id: int | None = None,
    validate: bool | None = None,
    filters: NodeFilters | None = None,
    filter_rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Constrain and IG-reweight ``scores`` ``[rows, vocab]`` in place, one native call.

    Row ``r``'s generated tokens are ``input_ids[r, prompt_length:]``; they are walked from the
    trie root to a node ``n``. Every child ``y`` of ``n`` gets ``(1 - alpha * IG~(y)) * logp(y)``
    and every other token ``-inf``, where ``logp`` is ``scores`` itself, or
    ``log_softmax(scores / temperature)`` when ``temperature != 1``, minus the log-sum-exp over
    the children when ``renormalize``. A leaf allows only ``eos_token_id`` (score 0) when given.
    A row whose tokens leave the trie becomes all ``-inf`` (status 1).

    Args:
        trie: the catalog, on the device of ``scores``.
        input_ids: int64 ``[rows, seq_len]``, prompt followed by the generated tokens.
        scores: float32 / bfloat16 / float16 ``[rows, vocab]``, modified in place.
        prompt_length: number of prompt columns (left padding included).
        alpha: debiasing strength in [0, 1].
        temperature: > 0; see above.
        renormalize: renormalise the log-probabilities over the allowed tokens first.
        eos_token_id: the only token allowed at a leaf, or None.
        validate: raise on NaN scores; defaults to True on CPU and False on CUDA (the check needs
            a host sync there).
        filters: per-request item filters / CF scores
            (:func:`igdbeam.ops.node_filters.node_filters`): disallowed children are treated as
            non-children, allowed ones gain the CF term.
        filter_rows: int ``[rows]`` prompt (filter row) of each row; None: row ``r`` uses filter
            row ``r`` (or row 0 of single-row filters).

    Returns:
        ``(nodes, row_status)``: int32 ``[rows]`` trie node of each row (-1 when off the trie)
        and int32 ``[rows]`` status (0 ok, 1 left the trie, 2 NaN among the child scores).

    Raises:
        VocabularyError: a trie built for another vocabulary (or holding a negative token id),
            or ``eos_token_id >= vocab``.
        InvalidIdError: ``prompt_length`` or ``eos_token_id`` not an integer (a float or bool is
            never truncated).
        ValueError: bad shapes, dtypes, devices, ``alpha`` outside [0, 1], or (when validating)
            NaN scores. (The two errors above are ValueError subclasses too.)
        MissingCudaKernelsError: CUDA tensors with a build that has no CUDA kernels.
    """
    return checked_processor_step(
        trie,
        input_ids,
        scores,
        prompt_length=prompt_length,
        alpha=check_unit_interval("alpha", alpha),
        temperature=check_temperature(temperature),
        renormalize=renormalize,
        eos_token_id=eos_token_id,
        validate=validate,
        filters=filters,
        filter_rows=filter_rows,
    )


def checked_processor_step(
    trie: ItemTrie,
    input_ids: torch.Tensor,
    scores: torch.Tensor,
    *,
    prompt_length: int,
    alpha: float,
    temperature: float,
    renormalize: bool = False,
    eos_token_id: int | None = None,
    validate: bool | None = None,
    filters: NodeFilters | None = None,
    filter_rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`processor_step` for a caller that already checked ``alpha`` (a float in [0, 1])
    and ``temperature`` (a finite float > 0) once, at its own public entry
    (``IGDLogitsProcessor``): the per-step tensors are still checked here."""
    check_tensor("input_ids", input_ids, ndim=2, dtypes=(torch.int64,), device=trie.device)
    check_tensor("scores", scores, ndim=2, dtypes=tuple(LOGIT_DTYPES), device=trie.device)
    rows, seq_len = input_ids.shape
    if scores.shape[0] != rows:
        raise ValueError(f"scores has {scores.shape[0]} rows but input_ids has {rows}")
    prompt_length = as_index(prompt_length, "prompt_length")
    if not 0 <= prompt_length <= seq_len:
        raise ValueError(f"prompt_length {prompt_length} must lie in [0, {seq_len}]")
    vocab = scores.shape[1]
    _check_vocab_size(trie, vocab)
    eos = _check_eos(eos_token_id, vocab)
    if input_ids.stride(-1) != 1:
        input_ids = input_ids.contiguous()
    work = scores if scores.stride(-1) == 1 else scores.contiguous()
    if validate is None:
        validate = scores.device.type != "cuda"
    nodes, status = PROCESSOR_STEP(
        trie_operands(trie),
        trie.max_fanout,
        input_ids,
        work,
        prompt_length,
        alpha,
        temperature,
        bool(renormalize),
        eos,
        *filter_operands(filters if rows else None, rows, filter_rows, scores.device),
        bool(validate),
    )
    if work is not scores:
        scores.copy_(work)
    return nodes, status


def beam_step(
    trie: ItemTrie,
    logits: torch.Tensor,
    beam_scores: torch.Tensor,
    nodes: torch.Tensor,
    *,
    beams: int,
    num_candidates: int,
    alpha: float = 0.0,
    temperature: float = 1.0,
    renormalize: bool = False,
    max_candidates_per_row: int | None = None,
    filters: NodeFilters | None = None,
    filter_rows: torch.Tensor | None = None,
) -> BeamStepResult:
    """Score every trie child of every active beam and keep the best ``num_candidates`` per row.

    Row ``r = b * beams + k`` of ``logits`` ``[batch * beams, vocab]`` holds beam ``k`` of batch
    row ``b``; ``nodes[r]`` is its trie node (``< 0`` or a leaf: inactive). A child ``y`` of an
    active beam scores ``beam_scores[r] + (1 - alpha * IG~(y)) * logp(y)`` with
    ``logp = log_softmax(logits[r] / temperature)`` over the full row (minus the log-sum-exp over
    the children when ``renormalize``). Candidates are ordered by score descending, ties by
    ``(beam, token)`` ascending.

    Args:
        trie: the catalog, on the device of ``logits``.
        logits: float32 / bfloat16 / float16 raw model logits, unit stride in the last dim.
        beam_scores: float32 ``[batch * beams]`` running scores.
        nodes: int32 ``[batch * beams]`` trie node of each beam (negative: inactive). An id
            ``>= trie.num_nodes`` is a caller bug: the CPU op raises NativeArgumentError naming
            it; the CUDA op cannot check without a host sync and never reads out of bounds, but
            its result for such a beam is unspecified.
        beams: beams per batch row.
        num_candidates: candidates kept per batch row.
        alpha: debiasing strength in [0, 1].
        temperature: > 0.
        renormalize: renormalise over each beam's children before weighting.
        max_candidates_per_row: optional upper bound on the candidates (children of active
            beams) of any batch row, e.g. ``trie.fanout_bounds()[0]`` on a step from the root.
            Only a speed hint for CUDA (how many blocks select each row; the default bound is
            ``beams * trie.max_fanout``); every value gives the same result.
        filters: per-request item filters / CF scores
            (:func:`igdbeam.ops.node_filters.node_filters`): a disallowed child is never a
            candidate, an allowed child ``c`` of node ``n`` adds ``weight * (S(c) - S(n))`` to
            its score.
        filter_rows: int ``[batch]`` prompt (filter row) of each batch row, e.g. the prompts a
            compacted search still decodes; None: batch row ``b`` uses filter row ``b`` (or row
            0 of single-row filters).

    Returns:
        A :class:`BeamStepResult` of ``[batch, num_candidates]`` tensors.

    Raises:
        VocabularyError: a trie built for another vocabulary (or holding a negative token id).
        InvalidIdError: ``beams`` or ``num_candidates`` not an integer.
        NativeArgumentError: (CPU) a node id past the trie (a ValueError).
        ValueError: bad shapes, dtypes, devices, ``alpha`` or ``temperature``.
        MissingCudaKernelsError: CUDA tensors with a build that has no CUDA kernels.
    """
    return checked_beam_step(
        trie,
        logits,
        beam_scores,
        nodes,
        beams=beams,
        num_candidates=num_candidates,
        alpha=check_unit_interval("alpha", alpha),
        temperature=check_temperature(temperature),
        renormalize=renormalize,
        max_candidates_per_row=max_candidates_per_row,
        filters=filters,
        filter_rows=filter_rows,
    )


def checked_beam_step(
    trie: ItemTrie,
    logits: torch.Tensor,
    beam_scores: torch.Tensor,
    nodes: torch.Tensor,
    *,
    beams: int,
    num_candidates: int,
    alpha: float,
    temperature: float,
    renormalize: bool = False,
    max_candidates_per_row: int | None = None,
    filters: NodeFilters | None = None,
    filter_rows: torch.Tensor | None = None,
) -> BeamStepResult:
    """:func:`beam_step` for a search whose ``alpha`` (a float in [0, 1]) and ``temperature`` (a
    finite float > 0) were checked once at its public entry (``igdbeam.generate``,
    ``igdbeam.vllm.generate``): the tensors of each step are still checked here."""
    check_tensor("logits", logits, ndim=2, dtypes=tuple(LOGIT_DTYPES), device=trie.device)
    check_tensor("beam_scores", beam_scores, ndim=1, dtypes=(torch.float32,), device=trie.device)
    check_tensor("nodes", nodes, ndim=1, dtypes=(torch.int32,), device=trie.device)
    beams, num_candidates = as_index(beams, "beams"), as_index(num_candidates, "num_candidates")
    if beams < 1 or num_candidates < 1:
        raise ValueError(f"beams ({beams}) and num_candidates ({num_candidates}) must be >= 1")
    rows, vocab = logits.shape
    if rows % beams:
        raise ValueError(f"logits has {rows} rows, not a multiple of beams={beams}")
    if beam_scores.shape[0] != rows or nodes.shape[0] != rows:
        raise ValueError(
            f"beam_scores ({beam_scores.shape[0]}) and nodes ({nodes.shape[0]}) need one entry "
            f"per logits row ({rows})"
        )
    _check_vocab_size(trie, vocab)
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    beam_scores, nodes = beam_scores.contiguous(), nodes.contiguous()
    bound = 0 if max_candidates_per_row is None else max(1, int(max_candidates_per_row))
    score, logp, beam, token, node = BEAM_STEP(
        trie_operands(trie),
        trie.max_fanout,
        logits,
        beam_scores,
        nodes,
        beams,
        alpha,
        temperature,
        bool(renormalize),
        num_candidates,
        *filter_operands(filters if rows else None, rows // beams, filter_rows, logits.device),
        0,  # select_slices: automatic
        bound,
    )
    return BeamStepResult(score, logp, beam, token, node)
