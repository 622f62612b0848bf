"""igdbeam's native ops registered with ``torch.library`` as ``torch.ops.igdbeam.*``.

Each op of :data:`igdbeam.native.op_table.OPS` is registered once, with the schema the table
generates, by ``torch.library.custom_op`` for both device types (``"cpu"`` and ``"cuda"``): one
kernel function per op builds the native arguments (pointers, shapes, strides) by name and calls
the pybind11 binding through :func:`igdbeam.native.dispatch.run_op`, which picks the C++ or CUDA
backend from the tensors' device. The native core stays free of libtorch; torch only sees
tensors in and tensors out, so ``torch.compile`` traces a call as one opaque node (no graph
break) and needs only the fake implementations below, which compute every output's shape, dtype
and device exactly as the kernels allocate them.

The kernels trust their arguments' metadata (the public functions in :mod:`igdbeam.ops` and
:mod:`igdbeam.trie` check it, once); they run only the checks that read tensor values
(:mod:`igdbeam.native.value_checks`). None of the ops is differentiable: a functional op's outputs
are marked non-differentiable (as the raw pybind11 calls' outputs were), and
``processor_step`` writes ``scores`` in place (``Tensor(a!)``). ``check_labels`` returns nothing
and is registered as side-effectful, so a compiled graph keeps it.

Call the ops through the public functions (:func:`igdbeam.label_token_weights`,
:func:`igdbeam.beam_step`, ...); ``torch.ops.igdbeam.<name>`` itself expects arguments that
satisfy the contract those functions check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.fx.node

from igdbeam.native import value_checks
from igdbeam.native.checks import LOGIT_DTYPES
from igdbeam.native.dispatch import run_op
from igdbeam.native.library import _C
from igdbeam.native.op_table import OPS, TRIE_ARRAYS, native_args

__all__ = [
    "BEAM_STEP",
    "BUILD_NODE_FILTERS",
    "CHECK_LABELS",
    "LABEL_WEIGHTS",
    "PROCESSOR_STEP",
    "REGISTERED",
    "WALK_PATHS",
    "TrieArrays",
    "trie_operands",
]

Tensor = torch.Tensor


class TrieArrays(Protocol):
    """What the ops read from a trie (an :class:`~igdbeam.trie.item_trie.ItemTrie`)."""

    @property
    def max_fanout(self) -> int:
        """Largest number of children of one node."""
        ...

    def array(self, name: str) -> torch.Tensor:
        """One of the trie's arrays by name."""
        ...


def trie_operands(trie: TrieArrays) -> list[torch.Tensor]:
    """The schema's ``Tensor[] trie``: the trie's node arrays in the native view's order."""
    return [trie.array(name) for name in TRIE_ARRAYS]


def _view(trie: list[Tensor], max_fanout: int) -> Any:
    """The ``_C.TrieView`` of the arrays (raw pointers; the caller keeps the arrays alive)."""
    offsets, token, parent, depth, entropy, info_gain, info_gain_norm, zero_ig = (
        t.data_ptr() for t in trie
    )
    return _C.TrieView(
        trie[1].shape[0],
        offsets,
        token,
        parent,
        depth,
        entropy,
        info_gain,
        info_gain_norm,
        zero_ig,
        max_fanout=max_fanout,
    )


def _run(op: str, device_of: Tensor, **values: Any) -> None:
    """Call ``_C.<op>`` with ``values`` ordered by the op table, on ``device_of``'s backend."""
    run_op(op, *native_args(op, values), device_of=device_of)


def _ptr(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _filter_values(
    node_mask: Tensor | None,
    node_score: Tensor | None,
    score_weight: float,
    filter_rows: Tensor | None,
    filter_count: int,
) -> dict[str, Any]:
    """The native filter arguments (item_filters.h NodeFilter); all zero without a filter."""
    arrays = node_mask if node_mask is not None else node_score
    if arrays is None:
        return dict(node_mask=0, node_score=0, score_weight=0.0, filter_rows=0, filter_row_stride=0)
    if filter_rows is not None:
        value_checks.check_filter_rows(filter_rows, filter_count)
    return dict(
        node_mask=_ptr(node_mask),
        node_score=_ptr(node_score),
        score_weight=score_weight if node_score is not None else 0.0,
        filter_rows=_ptr(filter_rows),
        filter_row_stride=int(arrays.shape[1]),
    )


# ------------------------------------------------------------------------------ the kernels
def _walk_paths(
    trie: list[Tensor], max_fanout: int, tokens: Tensor, lengths: Tensor | None
) -> Tensor:
    rows, cols = tokens.shape
    out = _walk_paths_fake(trie, max_fanout, tokens, lengths)
    if rows > 0:
        _run(
            "walk_paths",
            tokens,
            trie=_view(trie, max_fanout),
            tokens=tokens.data_ptr(),
            rows=rows,
            cols=cols,
            row_stride=tokens.stride(0),
            lengths=_ptr(lengths),
            out_nodes=out.data_ptr(),
        )
    return out


def _walk_paths_fake(
    trie: list[Tensor], max_fanout: int, tokens: Tensor, lengths: Tensor | None
) -> Tensor:
    return tokens.new_empty(tokens.shape[0], dtype=torch.int32)


def _label_weights(
    trie: list[Tensor],
    max_fanout: int,
    labels: Tensor,
    ignore_index: int,
    beta: float,
    policy: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    info_gain, zero_ig, weight, row_status = _label_weights_fake(
        trie, max_fanout, labels, ignore_index, beta, policy
    )
    rows, cols = labels.shape
    if rows == 0 or cols == 0:
        for t in (info_gain, zero_ig, weight, row_status):
            t.zero_()
        return info_gain, zero_ig, weight, row_status
    _run(
        "label_weights",
        labels,
        trie=_view(trie, max_fanout),
        labels=labels.data_ptr(),
        rows=rows,
        cols=cols,
        row_stride=labels.stride(0),
        ignore_index=ignore_index,
        beta=beta,
        policy=policy,
        out_info_gain=info_gain.data_ptr(),
        out_zero_ig=zero_ig.data_ptr(),  # bool storage: the kernel writes 0 / 1 bytes
        out_weight=weight.data_ptr(),
        out_row_status=row_status.data_ptr(),
    )
    if policy == 0:  # "error"
        value_checks.raise_for_left_trie(labels, trie[0], trie[1], row_status, ignore_index)
    return info_gain, zero_ig, weight, row_status


def _label_weights_fake(
    trie: list[Tensor],
    max_fanout: int,
    labels: Tensor,
    ignore_index: int,
    beta: float,
    policy: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    rows, cols = labels.shape
    return (
        labels.new_empty(rows, cols, dtype=torch.float32),
        labels.new_empty(rows, cols, dtype=torch.bool),
        labels.new_empty(rows, cols, dtype=torch.float32),
        labels.new_empty(rows, dtype=torch.int32),
    )


def _check_labels(labels: Tensor, vocab_size: int, ignore_index: int, name: str) -> None:
    value_checks.check_label_values(
        labels, None if vocab_size < 0 else vocab_size, ignore_index, name
    )


def _check_labels_fake(labels: Tensor, vocab_size: int, ignore_index: int, name: str) -> None:
    return None


def _processor_step(
    trie: list[Tensor],
    max_fanout: int,
    input_ids: Tensor,
    scores: Tensor,
    prompt_len: int,
    alpha: float,
    temperature: float,
    renormalize: bool,
    eos_token_id: int,
    node_mask: Tensor | None,
    node_score: Tensor | None,
    score_weight: float,
    filter_rows: Tensor | None,
    filter_count: int,
    validate: bool,
) -> tuple[Tensor, Tensor]:
    rows, seq_len = input_ids.shape
    vocab = scores.shape[1]
    nodes, status = _processor_step_fake(trie, max_fanout, input_ids, scores)
    value_checks.check_token_range(trie[1], vocab)
    if rows == 0:
        return nodes, status
    _run(
        "processor_step",
        scores,
        trie=_view(trie, max_fanout),
        input_ids=input_ids.data_ptr(),
        rows=rows,
        seq_len=seq_len,
        ids_row_stride=input_ids.stride(0),
        prompt_len=prompt_len,
        scores=scores.data_ptr(),
        dtype_code=LOGIT_DTYPES[scores.dtype],
        vocab=vocab,
        scores_row_stride=scores.stride(0),
        alpha=alpha,
        temperature=temperature,
        renormalize=renormalize,
        eos_token_id=eos_token_id,
        out_nodes=nodes.data_ptr(),
        out_row_status=status.data_ptr(),
        **_filter_values(node_mask, node_score, score_weight, filter_rows, filter_count),
    )
    if validate:
        value_checks.raise_for_nan_rows(status)
    return nodes, status


def _processor_step_fake(
    trie: list[Tensor], max_fanout: int, input_ids: Tensor, scores: Tensor, *_: Any
) -> tuple[Tensor, Tensor]:
    rows = input_ids.shape[0]
    return scores.new_empty(rows, dtype=torch.int32), scores.new_empty(rows, dtype=torch.int32)


def _beam_step(
    trie: list[Tensor],
    max_fanout: int,
    logits: Tensor,
    beam_scores: Tensor,
    nodes: Tensor,
    beams: int,
    alpha: float,
    temperature: float,
    renormalize: bool,
    num_candidates: int,
    node_mask: Tensor | None,
    node_score: Tensor | None,
    score_weight: float,
    filter_rows: Tensor | None,
    filter_count: int,
    select_slices: int,
    candidate_bound: int,
) -> tuple[Tensor, ...]:
    out = _beam_step_fake(
        trie,
        max_fanout,
        logits,
        beam_scores,
        nodes,
        beams,
        alpha,
        temperature,
        renormalize,
        num_candidates,
    )
    rows, vocab = logits.shape
    value_checks.check_token_range(trie[1], vocab)
    batch = rows // beams
    if batch == 0:
        return out
    score, logp, beam, token, node = out
    _run(
        "beam_step",
        logits,
        trie=_view(trie, max_fanout),
        logits=logits.data_ptr(),
        dtype_code=LOGIT_DTYPES[logits.dtype],
        batch=batch,
        beams=beams,
        vocab=vocab,
        logits_row_stride=logits.stride(0),
        beam_scores=beam_scores.data_ptr(),
        nodes=nodes.data_ptr(),
        alpha=alpha,
        temperature=temperature,
        renormalize=renormalize,
        num_candidates=num_candidates,
        out_score=score.data_ptr(),
        out_logp=logp.data_ptr(),
        out_beam=beam.data_ptr(),
        out_token=token.data_ptr(),
        out_node=node.data_ptr(),
        select_slices=select_slices,
        candidate_bound=candidate_bound,
        **_filter_values(node_mask, node_score, score_weight, filter_rows, filter_count),
    )
    return out


def _beam_step_fake(
    trie: list[Tensor],
    max_fanout: int,
    logits: Tensor,
    beam_scores: Tensor,
    nodes: Tensor,
    beams: int,
    alpha: float,
    temperature: float,
    renormalize: bool,
    num_candidates: int,
    *_: Any,
) -> tuple[Tensor, ...]:
    batch = logits.shape[0] // beams
    return tuple(
        logits.new_empty(batch, num_candidates, dtype=dtype)
        for dtype in (torch.float32, torch.float32, torch.int32, torch.int64, torch.int32)
    )


def _build_node_filters(
    trie: list[Tensor],
    max_fanout: int,
    leaf_nodes: Tensor,
    leaf_item_offsets: Tensor,
    leaf_items: Tensor,
    num_items: int,
    rows: int,
    item_mask: Tensor | None,
    item_scores: Tensor | None,
    max_depth: int,
) -> tuple[Tensor, Tensor]:
    out_mask, out_scores = _build_node_filters_fake(
        trie,
        max_fanout,
        leaf_nodes,
        leaf_item_offsets,
        leaf_items,
        num_items,
        rows,
        item_mask,
        item_scores,
        max_depth,
    )

    def stride(t: Tensor | None) -> int:
        return 0 if t is None or t.shape[0] == 1 else int(t.stride(0))

    token = trie[1]
    _run(
        "build_node_filters",
        token,
        trie=_view(trie, max_fanout),
        leaf_nodes=leaf_nodes.data_ptr(),
        leaf_item_offsets=leaf_item_offsets.data_ptr(),
        leaf_items=leaf_items.data_ptr(),
        num_leaves=leaf_nodes.shape[0],
        num_items=num_items,
        rows=rows,
        item_mask=_ptr(item_mask),  # bool storage: read as uint8 0 / 1
        mask_row_stride=stride(item_mask),
        item_scores=_ptr(item_scores),
        scores_row_stride=stride(item_scores),
        out_node_mask=_ptr(out_mask) if item_mask is not None else 0,
        out_node_score=_ptr(out_scores) if item_scores is not None else 0,
        num_threads=torch.get_num_threads() if token.device.type == "cpu" else 1,
        max_depth=max_depth,
    )
    return out_mask, out_scores


def _build_node_filters_fake(
    trie: list[Tensor],
    max_fanout: int,
    leaf_nodes: Tensor,
    leaf_item_offsets: Tensor,
    leaf_items: Tensor,
    num_items: int,
    rows: int,
    item_mask: Tensor | None,
    item_scores: Tensor | None,
    max_depth: int,
) -> tuple[Tensor, Tensor]:
    token = trie[1]
    n = token.shape[0]
    groups = (rows + 63) // 64 if item_mask is not None else 0
    return (
        token.new_empty(groups, n, dtype=torch.int64),
        token.new_empty(rows if item_scores is not None else 0, n, dtype=torch.float32),
    )


# ---------------------------------------------------------------------------- registration
def _non_differentiable(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.mark_non_differentiable(*(output if isinstance(output, tuple) else (output,)))


def _register(name: str, kernel: Callable[..., Any], fake: Callable[..., Any]) -> Any:
    """Register ``igdbeam::<name>`` from its table entry; return its OpOverload."""
    spec = OPS[name]
    op = torch.library.custom_op(
        spec.qualname,
        kernel,
        mutates_args=spec.mutated,
        device_types=("cpu", "cuda"),
        schema=spec.schema(),
    )
    op.register_fake(fake)
    if not spec.mutated and spec.outputs:
        n_inputs = len(spec.inputs)
        op.register_autograd(
            lambda ctx, *grads: (None,) * n_inputs, setup_context=_non_differentiable
        )
    return getattr(getattr(torch.ops, spec.qualname.split("::")[0]), name).default


WALK_PATHS = _register("walk_paths", _walk_paths, _walk_paths_fake)
LABEL_WEIGHTS = _register("label_weights", _label_weights, _label_weights_fake)
CHECK_LABELS = _register("check_labels", _check_labels, _check_labels_fake)
PROCESSOR_STEP = _register("processor_step", _processor_step, _processor_step_fake)
BEAM_STEP = _register("beam_step", _beam_step, _beam_step_fake)
BUILD_NODE_FILTERS = _register("build_node_filters", _build_node_filters, _build_node_filters_fake)

# A check that returns nothing: keep it in compiled graphs (dead-code elimination would drop it).
torch.fx.node.has_side_effect(CHECK_LABELS)

REGISTERED: dict[str, Any] = {
    "walk_paths": WALK_PATHS,
    "label_weights": LABEL_WEIGHTS,
    "check_labels": CHECK_LABELS,
    "processor_step": PROCESSOR_STEP,
    "beam_step": BEAM_STEP,
    "build_node_filters": BUILD_NODE_FILTERS,
}
