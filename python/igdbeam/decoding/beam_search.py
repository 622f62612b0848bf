"""The beam-search loop behind :func:`igdbeam.generate`: candidates, finished items, stopping.

One loop serves several *finishers* at once. A finisher is a ``(length_penalty,
early_stopping)`` pair: it decides how a finished item is scored and when a prompt stops taking
items, but never which beams keep running (transformers picks the running beams by raw score), so
decodings that differ only in these two settings walk the same beams and can share every model
call. Each finisher keeps its own finished slots and stop flags.

Rows that cannot change any result are not sent to the model again: a prompt whose finishers
have all stopped (or that has no running beam) leaves the batch, and the beams per prompt shrink
to the most running beams any remaining prompt still has (running beams are kept best first, so
the dropped slots are empty). Beam order, tie-breaking and scores are the same as without
compaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from igdbeam.decoding.kv_cache import SharedPrefixCache, attention_view, decode_forward
from igdbeam.ops.decode_steps import checked_beam_step

if TYPE_CHECKING:
    from igdbeam.ops.node_filters import NodeFilters
    from igdbeam.trie.item_trie import ItemTrie

NEG_INF = float("-inf")

# Per-row model inputs that transformers grows along the sequence; they follow the beams.
ROW_KWARGS = ("attention_mask", "position_ids", "token_type_ids", "mm_token_type_ids")


@dataclass(frozen=True)
class Finisher:
    """How finished hypotheses are scored (``length_penalty``) and when a prompt stops."""

    length_penalty: float
    early_stopping: bool | str


@dataclass
class FinishedItems:
    """The ``K`` finished slots of every prompt for one finisher (best first)."""

    scores: torch.Tensor  # float32 [B, K], -inf = empty
    nodes: torch.Tensor  # int32 [B, K], -1 = empty
    stopped: torch.Tensor  # bool [B]


@dataclass
class SearchInputs:
    """The state after the prompt forward: last-position logits and the model's kwargs."""

    logits: torch.Tensor  # [B, V]
    model_kwargs: dict[str, Any]
    cache_key: str


def _select_rows(kwargs: dict[str, Any], cache_key: str, rows: torch.Tensor) -> None:
    """Keep (and reorder, and repeat) the model's per-row state at ``rows`` ``[prompts, beams]``
    (a cache with ``reorder_beams``, e.g. igdbeam's shared-prefix cache, takes them grouped)."""
    cache = kwargs[cache_key]
    if hasattr(cache, "reorder_beams"):
        cache.reorder_beams(rows)
    else:
        cache.reorder_cache(rows.reshape(-1))
    rows = rows.reshape(-1)
    for name in ROW_KWARGS:
        value = kwargs.get(name)
        if isinstance(value, torch.Tensor) and value.dim() == 2:
            kwargs[name] = value.index_select(0, rows)


def _finish_step(
    fin: FinishedItems,
    finisher: Finisher,
    active: torch.Tensor,
    cand_score: torch.Tensor,
    cand_node: torch.Tensor,
    new_leaf: torch.Tensor,
    best_running: torch.Tensor,
    gen_len: int,
    exact_len: float,
) -> torch.Tensor:
    """Merge this step's finished candidates into ``fin`` for the ``active`` prompts and update
    their stop flags; returns the active prompts' new stop flags."""
    K = fin.scores.shape[1]
    lp = finisher.length_penalty
    stopped = fin.stopped[active]
    new_fin = new_leaf & ~stopped.unsqueeze(1)
    scaled = cand_score / (gen_len**lp)
    merged_scores = torch.cat((fin.scores[active], torch.where(new_fin, scaled, NEG_INF)), dim=1)
    merged_nodes = torch.cat((fin.nodes[active], torch.where(new_fin, cand_node, -1)), dim=1)
    order = torch.sort(merged_scores, dim=1, descending=True, stable=True)[1][:, :K]
    scores = merged_scores.gather(1, order)
    nodes = merged_nodes.gather(1, order)
    fin.scores[active] = scores
    fin.nodes[active] = nodes

    # Transformers' per-prompt "improvement possible" flag, exact for tries (see generate).
    full = nodes[:, K - 1] >= 0
    if finisher.early_stopping is True:
        can_improve = ~full
    else:
        never = finisher.early_stopping == "never" and lp > 0
        bound_len = exact_len if never else gen_len
        can_improve = ~full | (best_running / (bound_len**lp) > scores[:, K - 1])
    stopped = stopped | ~can_improve
    fin.stopped[active] = stopped
    return stopped


def run_beam_search(
    model: Any,
    trie: ItemTrie,
    start: SearchInputs,
    finishers: list[Finisher],
    *,
    num_beams: int,
    alpha: float,
    temperature: float,
    renormalize: bool,
    pad_token_id: int,
    max_steps: int,
    filters: NodeFilters | None = None,
) -> list[FinishedItems]:
    """Run trie-constrained, IG-reweighted beam search from the prompt forward's state.

    ``start.model_kwargs`` (with its KV cache) is consumed: the cache is reordered in place.
    Nothing else is written: the model, its config and the trie are only read, so searches may
    run concurrently on one model.
    ``filters`` (one row per prompt, or one for all) are the per-request item filters / CF
    scores of :mod:`igdbeam.ops.node_filters`. Returns one :class:`FinishedItems` per finisher, in
    order.
    """
    logits, kwargs, cache_key = start.logits, start.model_kwargs, start.cache_key
    device = logits.device
    B, K = logits.shape[0], int(num_beams)
    C = 2 * K
    offsets = trie.array("child_offsets")
    is_leaf_node = offsets[1:] == offsets[:-1]
    first_k = torch.arange(C, device=device).unsqueeze(0) < K
    fins = [
        FinishedItems(
            torch.full((B, K), NEG_INF, dtype=torch.float32, device=device),
            torch.full((B, K), -1, dtype=torch.int32, device=device),
            torch.zeros(B, dtype=torch.bool, device=device),
        )
        for _ in finishers
    ]
    active = torch.arange(B, device=device)  # original prompt of each batch row still decoded
    run_scores = torch.zeros(B, dtype=torch.float32, device=device)
    run_nodes = torch.zeros(B, dtype=torch.int32, device=device)
    beams_now = 1  # the first step expands each prompt's single row into K beams
    exact_len = float(trie.max_depth)
    root_fanout, inner_fanout = trie.fanout_bounds() if device.type == "cuda" else (0, 0)
    # The shared-prefix cache's decode forwards run on a view of the model private to this
    # search (the model and its config are never changed: concurrent searches are safe).
    view = attention_view(model) if isinstance(kwargs[cache_key], SharedPrefixCache) else None

    for step in range(max_steps):
        cand = checked_beam_step(
            trie,
            logits,
            run_scores,
            run_nodes,
            beams=beams_now,
            num_candidates=C,
            alpha=alpha,
            temperature=temperature,
            renormalize=renormalize,
            # Step 1 starts at the root; later beams sit below it (sizes the CUDA select).
            max_candidates_per_row=root_fanout if step == 0 else beams_now * inner_fanout,
            filters=filters,
            filter_rows=active if filters is not None and filters.num_rows > 1 else None,
        )
        if device.type == "cpu" and bool(torch.isnan(cand.score).any()):
            raise ValueError("the model produced NaN logits (check its dtype and inputs)")
        valid = (cand.node >= 0) & (cand.score > NEG_INF)
        leaf = valid & is_leaf_node[cand.node.clamp(min=0).long()]

        # Running beams: the best K candidates that are not finished (the same for all finishers).
        running = valid & ~leaf
        pick = torch.sort(
            torch.where(running, cand.score, NEG_INF), dim=1, descending=True, stable=True
        )[1][:, :K]
        live = running.gather(1, pick)
        next_scores = torch.where(live, cand.score.gather(1, pick), NEG_INF)
        next_nodes = torch.where(live, cand.node.gather(1, pick), -1)
        src = torch.where(live, cand.beam.gather(1, pick).long(), 0)
        tokens = torch.where(live, cand.token.gather(1, pick), pad_token_id)

        # Finished items: only candidates among the first K, only while the prompt is open.
        new_leaf = leaf & first_k
        open_any = torch.zeros_like(live[:, 0])
        for fin, finisher in zip(fins, finishers, strict=True):
            stopped = _finish_step(
                fin,
                finisher,
                active,
                cand.score,
                cand.node,
                new_leaf,
                next_scores[:, 0],
                step + 1,
                exact_len,
            )
            open_any |= ~stopped
        keep = open_any & live[:, 0]
        n_live = torch.where(keep, live.sum(dim=1), 0)
        n_kept, width = (int(v) for v in torch.stack((keep.sum(), n_live.max())).tolist())
        if n_kept == 0 or step + 1 == max_steps:
            break

        # Compact: drop finished prompts and trailing empty beam slots, then run the model. When
        # nothing is dropped (most steps) this is the plain beam reorder, without extra indexing.
        if n_kept < keep.shape[0]:
            kept = keep.nonzero().squeeze(1)
            src, next_scores, next_nodes, tokens = (
                t[kept] for t in (src, next_scores, next_nodes, tokens)
            )
            active = active[kept]
        else:
            kept = torch.arange(n_kept, device=device)
        if width < K:
            src, next_scores, next_nodes, tokens = (
                t[:, :width] for t in (src, next_scores, next_nodes, tokens)
            )
        _select_rows(kwargs, cache_key, kept.unsqueeze(1) * beams_now + src)
        beams_now = width
        run_scores = next_scores.reshape(-1).contiguous()
        run_nodes = next_nodes.reshape(-1).to(torch.int32).contiguous()
        inputs = model.prepare_inputs_for_generation(
            tokens.reshape(-1, 1), next_sequence_length=1, **kwargs
        )
        outputs = decode_forward(model, inputs, kwargs[cache_key], view)
        kwargs = model._update_model_kwargs_for_generation(outputs, kwargs)
        logits = outputs.logits[:, -1, :]
    return fins
