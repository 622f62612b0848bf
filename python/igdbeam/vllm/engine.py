"""IGD beam search on vLLM engines: :func:`generate` (``vllm.LLM``) and :func:`agenerate`
(``vllm.v1.engine.async_llm.AsyncLLM``).

Each :class:`~igdbeam.vllm.search.ChildQuery` becomes one request whose prompt is the beam's
tokens followed by its chain's tokens, with ``max_tokens=1``:

* ``logprob_token_ids`` = the children of the chain's last node: vLLM returns their *raw*
  log-probabilities (the full-vocabulary log-softmax of the model's logits, before any logits
  processor; ``logprobs_mode="raw_logprobs"``, vLLM's default), exactly what
  :func:`igdbeam.generate` weights. A node with more children than vLLM's per-request limit
  (``MAX_LOGPROB_TOKEN_IDS``, 128 in vLLM 0.32; SmolLM2's MovieLens root has 605-621) is asked
  in several requests of at most that many tokens with the same prompt. They go in two waves:
  each query's first request, then (once those have put the prompt's KV blocks in the prefix
  cache) the others, which then compute only the prompt's last, partial block instead of the
  whole prompt again.
* ``prompt_logprobs=0`` when the chain has tokens: the log-prob of each prompt token given the
  tokens before it, read at the chain's positions. Prefix caching stays on for these requests
  (``skip_reading_prefix_cache=False``); a chain position whose KV vLLM took from its cache
  (the same chain asked before, e.g. the same history again) has no log-prob and is asked again
  as a one-token query.

With prefix caching on (the default), every request reuses the KV of the prompt and of the
beam's earlier tokens in whole KV blocks, so a request recomputes at most one block plus its
chain. igdbeam's native beam step then does the whole selection.

vLLM is imported lazily: the search itself runs without it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from igdbeam.decoding.inputs import Decoding
from igdbeam.vllm.search import ChildQuery, TrieSearch

if TYPE_CHECKING:
    from igdbeam.decoding.outputs import RecommendationOutput
    from igdbeam.trie.item_trie import ItemTrie
    from igdbeam.vllm.compact import CompactTrie

# vLLM 0.32's SamplingParams.logprob_token_ids limit (vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS);
# read from vLLM when it is importable.
DEFAULT_MAX_TOKEN_IDS = 128
_COMPACT_CACHE: dict[int, tuple[Any, CompactTrie]] = {}


def max_token_ids_per_request() -> int:
    """vLLM's limit on ``SamplingParams.logprob_token_ids`` (128 in vLLM 0.32)."""
    try:
        from vllm.sampling_params import MAX_LOGPROB_TOKEN_IDS
    except ImportError:  # pragma: no cover - older or newer vLLM without the constant
        return DEFAULT_MAX_TOKEN_IDS
    return int(MAX_LOGPROB_TOKEN_IDS)


def compact_trie(trie: ItemTrie | CompactTrie) -> CompactTrie:
    """The compact form of ``trie`` (built once per trie object and kept while it lives)."""
    from igdbeam.vllm.compact import CompactTrie

    if isinstance(trie, CompactTrie):
        return trie
    hit = _COMPACT_CACHE.get(id(trie))
    if hit is not None and hit[0] is trie:
        return hit[1]
    compact = CompactTrie(trie)
    _COMPACT_CACHE.clear()  # one trie at a time is the common case; never grow unbounded
    _COMPACT_CACHE[id(trie)] = (trie, compact)
    return compact


def _sampling_params(children: list[int], query: ChildQuery | None) -> Any:
    """One request's params: the children's log-probs at the last position and, for the first
    request of a chain query, each chain token's log-prob at the prompt row before it."""
    from vllm import SamplingParams

    extra: dict[str, Any] = {}
    if query is not None and query.chain_tokens:
        extra = dict(
            # The log-prob of every prompt token given the tokens before it (0 extra top
            # tokens); only the chain's are read. vLLM's default for prompt log-probs is to
            # recompute the whole prompt; here positions may come from the prefix cache (they
            # then have no log-prob: _answers asks for those again, one node each).
            prompt_logprobs=0,
            skip_reading_prefix_cache=False,
        )
    return SamplingParams(
        max_tokens=1,
        temperature=0.0,
        detokenize=False,
        logprob_token_ids=children,
        flat_logprobs=True,
        skip_clone=True,
        **extra,
    )


def _requests(
    queries: Sequence[ChildQuery], limit: int
) -> tuple[list[Any], list[Any], list[tuple[int, int, int]]]:
    """vLLM prompts and params for the queries, and ``(query, start, length)`` of each request
    (``start`` into the last node's children; the request with ``start == 0`` also scores the
    chain)."""
    from vllm.inputs import TokensPrompt

    prompts, params, where = [], [], []
    for q, query in enumerate(queries):
        sequence = query.sequence
        for start in range(0, max(len(query.children), 1), limit):
            chunk = query.children[start : start + limit]
            prompts.append(TokensPrompt(prompt_token_ids=sequence))
            params.append(_sampling_params(chunk, query if start == 0 else None))
            where.append((q, start, len(chunk)))
    return prompts, params, where


def _waves(where: Sequence[tuple[int, int, int]]) -> list[list[int]]:
    """The requests (indices into ``where``) in the order to send them: every query's first
    request, then the further chunks of nodes over the per-request limit (empty when none)."""
    first = [i for i, (_, start, _) in enumerate(where) if start == 0]
    rest = [i for i, (_, start, _) in enumerate(where) if start > 0]
    return [first, rest] if rest else [first]


def _chunk_logprobs(output: Any, length: int) -> np.ndarray:
    """The requested tokens' log-probs of one finished request (column 0 is the sampled token)."""
    completion = output.outputs[0]
    lps = completion.logprobs
    if lps is None or len(lps) == 0:
        raise RuntimeError(
            f"vLLM returned no log-probs for request {output.request_id} (finish reason "
            f"{completion.finish_reason!r})"
        )
    flat = getattr(lps, "logprobs", None)
    if flat is not None:  # FlatLogprobs: position 0 spans start_indices[0]..end_indices[0]
        lo = lps.start_indices[0]
        return np.asarray(flat[lo + 1 : lo + 1 + length], dtype=np.float64)
    first = lps[0]  # pragma: no cover - dict-style logprobs (flat_logprobs=False)
    return np.asarray([v.logprob for v in list(first.values())[1 : 1 + length]])


def _chain_logprobs(output: Any, query: ChildQuery) -> np.ndarray:
    """The chain tokens' log-probs, each given the tokens before it; NaN where vLLM did not
    compute the position (its KV came from the prefix cache: a chain asked before)."""
    k = len(query.chain_tokens)
    out = np.full(k, np.nan)
    lps = output.prompt_logprobs
    first = len(query.token_ids)
    if lps is None or len(lps) != first + k:
        return out
    # Positions whose KV came from the prefix cache were not computed: their entries are not
    # log-probs of this request (vLLM may still fill them), so only later ones are read.
    computed_from = int(getattr(output, "num_cached_tokens", 0) or 0)
    starts, ends = getattr(lps, "start_indices", None), getattr(lps, "end_indices", None)
    for i, token in enumerate(query.chain_tokens):
        pos = first + i
        if pos - 1 < computed_from:  # its log-prob comes from the logits at pos - 1
            continue
        if starts is not None and ends is not None:  # FlatLogprobs
            found = [
                lps.logprobs[j] for j in range(starts[pos], ends[pos]) if lps.token_ids[j] == token
            ]
        else:  # pragma: no cover - dict-style logprobs
            entry = lps[pos] or {}
            found = [entry[token].logprob] if token in entry else []
        if found and np.isfinite(found[0]):
            out[i] = found[0]
    return out


Missing = list[tuple[int, int, ChildQuery]]


def _answers(
    queries: Sequence[ChildQuery],
    outputs: Sequence[Any],
    where: Sequence[tuple[int, int, int]],
) -> tuple[list[list[np.ndarray]], Missing]:
    """Per query, one log-prob array per chain node; and, as ``(query, chain position,
    one-node query)``, the chain positions vLLM served from its prefix cache without a log-prob
    (a chain asked before), to ask again."""
    last = [np.empty(len(q.children)) for q in queries]
    chains = [np.empty(0) for _ in queries]
    for out, (q, start, length) in zip(outputs, where, strict=True):
        last[q][start : start + length] = _chunk_logprobs(out, length)
        if start == 0 and queries[q].chain_tokens:
            chains[q] = _chain_logprobs(out, queries[q])
    answers: list[list[np.ndarray]] = []
    missing: Missing = []
    for q, (chain, lp) in enumerate(zip(chains, last, strict=True)):
        answers.append([chain[i : i + 1] for i in range(chain.shape[0])] + [lp])
        query = queries[q]
        for i in np.flatnonzero(np.isnan(chain)).tolist():
            tokens = query.token_ids + query.chain_tokens[:i]
            one = ChildQuery(query.prompt, tokens, [query.nodes[i]], [], [query.chain_tokens[i]])
            missing.append((q, i, one))
    return answers, missing


def _fill(answers: list[list[np.ndarray]], missing: Missing, again: Any) -> None:
    """Put the answers of the one-node queries of ``missing`` where they belong."""
    for (q, i, _), answer in zip(missing, again, strict=True):
        answers[q][i] = answer[0]


def check_engine_config(engine: Any) -> None:
    """Raise ValueError unless the engine returns raw log-probs (its ``logprobs_mode``)."""
    config = getattr(engine, "model_config", None)
    if config is None:
        llm_engine = getattr(engine, "llm_engine", None)
        config = getattr(llm_engine, "model_config", None)
    mode = getattr(config, "logprobs_mode", "raw_logprobs")
    if str(mode) not in ("raw_logprobs", "LogprobsMode.RAW_LOGPROBS"):
        raise ValueError(
            f"the engine runs with logprobs_mode={mode!r}; IGD needs the model's full-vocabulary "
            "log-probs: start it with logprobs_mode='raw_logprobs' (vLLM's default)"
        )


# The arguments of generate / agenerate that configure the search: the scoring rule's, then
# the search's own.
_DECODING_ARGS = ("alpha", "length_penalty", "early_stopping", "renormalize")
_SEARCH_ARGS = (
    "num_beams",
    "num_return_sequences",
    "pad_token_id",
    "max_new_tokens",
    "item_mask",
    "item_scores",
    "item_score_weight",
)


def _search(arguments: Mapping[str, Any]) -> TrieSearch:
    """The search of one :func:`generate` / :func:`agenerate` call, from its arguments
    (the call's ``locals()``: ``trie``, ``prompts`` and the settings named above)."""
    decoding = Decoding(**{name: arguments[name] for name in _DECODING_ARGS})
    return TrieSearch(
        compact_trie(arguments["trie"]),
        arguments["prompts"],
        decoding=decoding,
        **{name: arguments[name] for name in _SEARCH_ARGS},
    )


def generate(
    llm: Any,
    prompts: Any,
    *,
    trie: ItemTrie | CompactTrie,
    num_beams: int = 10,
    num_return_sequences: int | None = None,
    alpha: float = 0.0,
    length_penalty: float = 0.0,
    early_stopping: bool | str = False,
    renormalize: bool = False,
    pad_token_id: int = 0,
    max_new_tokens: int | None = None,
    item_mask: Any = None,
    item_scores: Any = None,
    item_score_weight: float = 1.0,
) -> RecommendationOutput:
    """Recommend items by IGD trie-constrained beam search on an offline ``vllm.LLM``.

    Same search and result as :func:`igdbeam.generate` (full-vocabulary log-softmax, steps
    scored ``(1 - alpha * IG~) * logp``, ``item_mask`` / ``item_scores`` node filters, length
    penalty, transformers' stopping rule, top ``2K`` candidates per step), with the model run by
    vLLM; see the module docstring for how the engine is asked. ``temperature`` is 1 (vLLM's raw
    log-probs). Start the engine with ``enable_prefix_caching=True`` (the default) so that
    beams reuse their prompt's KV across steps.

    Args:
        llm: a ``vllm.LLM`` (``logprobs_mode="raw_logprobs"``, the default).
        prompts: token-id lists (one per prompt, no padding), or an int tensor ``[B, L]``
            without padding.
        trie: the catalog trie (or its :class:`~igdbeam.vllm.compact.CompactTrie`, to build it
            once for many calls).
        num_beams, num_return_sequences, alpha, length_penalty, early_stopping, renormalize,
            max_new_tokens, item_mask, item_scores, item_score_weight: as
            :func:`igdbeam.generate`.
        pad_token_id: pads ``sequences``.

    Returns:
        A :class:`~igdbeam.RecommendationOutput` (CPU tensors; ``seconds`` = wall time).

    Raises:
        ValueError: bad arguments (as :func:`igdbeam.generate`), an engine that does not return
            raw log-probs, or NaN log-probs.
    """
    check_engine_config(llm)
    t0 = time.perf_counter()
    search = _search(locals())
    limit = max_token_ids_per_request()

    def ask(queries: Sequence[ChildQuery]) -> list[list[np.ndarray]]:
        if not queries:
            return []
        vllm_prompts, params, where = _requests(queries, limit)
        outputs: list[Any] = [None] * len(where)
        for wave in _waves(where):
            done = llm.generate(
                [vllm_prompts[i] for i in wave], [params[i] for i in wave], use_tqdm=False
            )
            for i, out in zip(wave, done, strict=True):
                outputs[i] = out
        answers, missing = _answers(queries, outputs, where)
        if missing:
            _fill(answers, missing, ask([m[2] for m in missing]))
        return answers

    while not search.done:
        queries = search.queries()
        search.advance(ask(queries))
    return search.output(time.perf_counter() - t0)


_REQUEST_IDS = itertools.count()


async def _one_request(engine: Any, prompt: Any, params: Any) -> Any:
    request_id = f"igdbeam-{uuid.uuid4().hex[:12]}-{next(_REQUEST_IDS)}"
    final = None
    async for out in engine.generate(prompt, params, request_id=request_id):
        final = out
    if final is None:
        raise RuntimeError(f"vLLM returned nothing for request {request_id}")
    return final


async def agenerate(
    engine: Any,
    prompts: Any,
    *,
    trie: ItemTrie | CompactTrie,
    num_beams: int = 10,
    num_return_sequences: int | None = None,
    alpha: float = 0.0,
    length_penalty: float = 0.0,
    early_stopping: bool | str = False,
    renormalize: bool = False,
    pad_token_id: int = 0,
    max_new_tokens: int | None = None,
    item_mask: Any = None,
    item_scores: Any = None,
    item_score_weight: float = 1.0,
) -> RecommendationOutput:
    """:func:`generate` on an online engine (``vllm.v1.engine.async_llm.AsyncLLM``).

    Each step's requests go to the engine concurrently; concurrent ``agenerate`` calls (e.g.
    one per HTTP request) share the engine's continuous batching, so their steps run in the
    same model forwards. The search's own CPU work (a native call and a few small tensor ops per
    step) runs on the event loop's thread. Arguments and result as :func:`generate`.
    """
    check_engine_config(engine)
    t0 = time.perf_counter()
    search = _search(locals())
    limit = max_token_ids_per_request()

    async def ask(queries: Sequence[ChildQuery]) -> list[list[np.ndarray]]:
        if not queries:
            return []
        vllm_prompts, params, where = _requests(queries, limit)
        outputs: list[Any] = [None] * len(where)
        for wave in _waves(where):
            done = await asyncio.gather(
                *(_one_request(engine, vllm_prompts[i], params[i]) for i in wave)
            )
            for i, out in zip(wave, done, strict=True):
                outputs[i] = out
        answers, missing = _answers(queries, outputs, where)
        if missing:
            _fill(answers, missing, await ask([m[2] for m in missing]))
        return answers

    while not search.done:
        queries = search.queries()
        search.advance(await ask(queries))
    return search.output(time.perf_counter() - t0)
