"""A beam-aware KV cache for :func:`igdbeam.generate`: each prompt's KV is kept once.

In beam search the ``K`` beams of a prompt share the prompt and differ only in the few tokens
generated so far. Transformers' :class:`~transformers.DynamicCache` nevertheless keeps one copy
of the prompt's keys and values per beam, copies all of them on every beam reorder and reads all
of them in every decoding step. :class:`SharedPrefixCache` keeps

* the **prefix**: the prompt's keys and values once per prompt, ``[P, H_kv, L, D]`` per layer,
  with the prompts' padding as an additive bias ``[P, 1, 1, L]``;
* the **suffix**: the generated tokens' keys and values per beam, ``[P * W, H_kv, S, D]``, the
  rows grouped by prompt (``W`` beams per prompt).

A beam reorder only touches the suffix; dropping prompts from the batch (igdbeam's compaction)
also selects their prefix rows, once. A decoding step's attention is cascade (shared-prefix)
attention, as in FlashInfer and Hydragen: the ``W`` beams x ``G`` query heads that share one of
a prompt's key heads attend to its prefix as one batch of queries, each beam attends to its own
suffix, and the two partial results are merged exactly with their log-sum-exp (see
:func:`cascade_attention`).

The cache plugs into transformers' models through the attention-function registry, per call:
transformers 5.x picks a layer's attention function by the name in ``config._attn_implementation``
and has no per-call override, so igdbeam never changes the model or its config. Instead each
beam search runs its decode forwards through an *attention view* of the model
(:func:`attention_view`): shallow copies of the modules on the path from the model to its
attention layers, holding a copy of the config that names ``igdbeam_shared_prefix`` (registered
once, at import). Parameters, buffers and every other module are the model's own; the view lives
as long as the search. The cache reaches the attention function as the ``igdbeam_kv`` keyword
(see :func:`decode_forward`). Prompt forwards are untouched: they fill a ``DynamicCache`` that
:meth:`SharedPrefixCache.from_dynamic` adopts without copying. Concurrent searches on one model
(threads) therefore never see each other's state. Supported are the Llama family's attention
layers (Llama and SmolLM2, Qwen2, Mistral; GQA included, sliding windows when the whole sequence
fits in the window) of models whose modules' ``forward`` is not replaced on the instance;
:func:`resolve_kv_cache` picks the cache for a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicLayer

ATTENTION_NAME = "igdbeam_shared_prefix"
KV_KWARG = "igdbeam_kv"
KV_CACHE_MODES = ("auto", "shared_prefix", "dynamic")
# Model types whose attention layers call ``cache.update`` and then the registered attention
# function with the model's keyword arguments, and nothing else on the keys in between.
SHARED_PREFIX_MODEL_TYPES = frozenset({"llama", "qwen2", "mistral"})


def storage_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a :class:`SharedPrefixCache` keeps a model's keys and values in: float32 for
    half-precision models (attention in float32 at the cost of one conversion), else ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _partial_attention(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unnormalised softmax attention of batched queries ``[B, M, D]`` (already scaled) on
    ``[B, T, D]`` keys and values: ``(exp(s - max) @ values, max, sum exp(s - max))`` with
    ``s = query @ keys^T + bias``, the max and the sum ``[B, M, 1]``."""
    keys_t = keys.transpose(-1, -2)
    scores = torch.bmm(query, keys_t) if bias is None else torch.baddbmm(bias, query, keys_t)
    top = scores.amax(dim=-1, keepdim=True)
    scores.sub_(top).exp_()
    return torch.bmm(scores, values), top, scores.sum(dim=-1, keepdim=True)


def cascade_attention(
    query: torch.Tensor,
    prefix_keys: torch.Tensor,
    prefix_values: torch.Tensor,
    prefix_bias: torch.Tensor | None,
    suffix_keys: torch.Tensor,
    suffix_values: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """One decoding step of attention over a shared prefix and per-row suffixes.

    Row ``r = p * W + w`` (prompt ``p``, beam ``w``) attends to ``prefix[p]`` and ``suffix[r]``.
    Each part is a softmax attention of its own, kept unnormalised as ``(o, m, s)`` (weighted
    values, score max, sum of ``exp(score - m)``; the part's log-sum-exp is ``m + log s``). The
    exact result merges them as in flash decoding: with ``M = max(m_pre, m_suf)``,
    ``a = exp(m_pre - M)``, ``b = exp(m_suf - M)``: ``(a o_pre + b o_suf) / (a s_pre + b s_suf)``.
    The prefix part runs the ``W`` beams x ``G`` query heads of a prompt's key head as one batch
    of queries, so each prompt's prefix is read once per step, not once per beam.

    Computed in float32 (float64 for float64 keys); :class:`SharedPrefixCache` keeps
    half-precision models' keys and values in float32, so nothing is converted per step.

    Args:
        query: ``[P * W, H, 1, D]``, ``H = H_kv * G`` (head ``h`` reads key head ``h // G``).
        prefix_keys, prefix_values: ``[P, H_kv, L, D]``.
        prefix_bias: float32 ``[P, 1, 1, L]`` added to the prefix scores (0 for tokens, ``-inf``
            for padding; every prompt needs one token), or None.
        suffix_keys, suffix_values: ``[P * W, H_kv, S, D]`` with ``S >= 1``.
        scaling: the softmax scale (``D ** -0.5`` for the Llama family).

    Returns:
        ``[P * W, 1, H, D]`` in the query's dtype (the layout transformers' attention returns).
    """
    N, H, Q, D = query.shape
    P, Hkv, L, _ = prefix_keys.shape
    S = suffix_keys.shape[-2]
    if Q != 1 or N % P or H % Hkv:
        raise ValueError(
            f"cascade attention needs one query token per row, rows = prompts x beams and "
            f"heads = kv_heads x groups; got query {tuple(query.shape)}, prefix "
            f"{tuple(prefix_keys.shape)}"
        )
    W, G = N // P, H // Hkv
    dtype = torch.float64 if prefix_keys.dtype == torch.float64 else torch.float32
    q = (query.to(dtype) * scaling).reshape(P, W, Hkv, G, D)

    qp = q.permute(0, 2, 1, 3, 4).reshape(P * Hkv, W * G, D)
    bias = None
    if prefix_bias is not None:
        bias = prefix_bias.to(dtype).expand(P, Hkv, 1, L).reshape(P * Hkv, 1, L)
    o_pre, m_pre, s_pre = _partial_attention(
        qp,
        prefix_keys.to(dtype).reshape(P * Hkv, L, D),
        prefix_values.to(dtype).reshape(P * Hkv, L, -1),
        bias,
    )
    # Back from [P, Hkv, W, G, .] (prompt-major) to the rows' [P, W, Hkv, G, .] layout.
    o_pre, m_pre, s_pre = (
        t.view(P, Hkv, W, G, -1).permute(0, 2, 1, 3, 4).reshape(N, Hkv, G, -1)
        for t in (o_pre, m_pre, s_pre)
    )
    o_suf, m_suf, s_suf = (
        t.view(N, Hkv, G, -1)
        for t in _partial_attention(
            q.reshape(N * Hkv, G, D),
            suffix_keys.to(dtype).reshape(N * Hkv, S, D),
            suffix_values.to(dtype).reshape(N * Hkv, S, -1),
            None,
        )
    )
    top = torch.maximum(m_pre, m_suf)
    a, b = (m_pre - top).exp_(), (m_suf - top).exp_()
    out = (o_pre * a + o_suf * b).div_(s_pre * a + s_suf * b)
    return out.to(query.dtype).reshape(N, 1, H, -1)


class SharedPrefixLayer(CacheLayerMixin):
    """One layer of a :class:`SharedPrefixCache`: prefix ``[P, H_kv, L, D]`` once per prompt,
    suffix ``keys`` / ``values`` ``[P * W, H_kv, S, D]`` per beam."""

    is_sliding = False
    # Always set (the base class allows None before a lazy initialization this layer never needs).
    keys: torch.Tensor
    values: torch.Tensor

    def __init__(self, prefix_keys: torch.Tensor, prefix_values: torch.Tensor) -> None:
        super().__init__()
        self.prefix_keys = prefix_keys.to(storage_dtype(prefix_keys.dtype))
        self.prefix_values = prefix_values.to(storage_dtype(prefix_values.dtype))
        shape = (prefix_keys.shape[0], prefix_keys.shape[1], 0, prefix_keys.shape[3])
        self.keys = self.prefix_keys.new_empty(shape)
        self.values = self.prefix_values.new_empty(shape[:3] + (prefix_values.shape[3],))
        self.device = prefix_keys.device
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Never needed: the layer is created from a filled prompt cache."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new tokens to the suffix; returns the suffix keys and values."""
        self.keys = torch.cat((self.keys, key_states.to(self.keys.dtype)), dim=-2)
        self.values = torch.cat((self.values, value_states.to(self.values.dtype)), dim=-2)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        """Prompt length (padding included) plus generated tokens."""
        return self.prefix_keys.shape[-2] + self.keys.shape[-2]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """``(kv_length, kv_offset)`` as a dynamic layer of the same length would give."""
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        """No maximum length."""
        return -1

    def select(self, prompts: torch.Tensor | None, rows: torch.Tensor) -> None:
        """Keep the prefix of ``prompts`` (None: all, in order) and the suffix of ``rows``."""
        if prompts is not None:
            self.prefix_keys = self.prefix_keys.index_select(0, prompts)
            self.prefix_values = self.prefix_values.index_select(0, prompts)
        self.keys = self.keys.index_select(0, rows)
        self.values = self.values.index_select(0, rows)


class SharedPrefixCache(Cache):
    """A transformers ``Cache`` for beam search that stores each prompt's KV once.

    Rows are grouped by prompt: row ``p * beams + w`` is beam ``w`` of the ``p``-th prompt still
    in the batch. Build it from a prompt forward's cache with :meth:`from_dynamic`, reorder it
    with :meth:`reorder_beams` and run decoding steps through :func:`decode_forward`.
    """

    def __init__(
        self, layers: Sequence[SharedPrefixLayer], prompt_mask: torch.Tensor | None = None
    ) -> None:
        super().__init__(layers=list(layers))
        first = layers[0]
        self.num_prompts = int(first.prefix_keys.shape[0])
        self.beams = 1
        # Layers served by the cascade attention in the current forward (see decode_forward).
        self.attention_calls = 0
        self.prefix_bias: torch.Tensor | None = None
        if prompt_mask is not None and not bool(prompt_mask.all()):
            bias = torch.zeros(prompt_mask.shape, dtype=torch.float32, device=first.device)
            bias.masked_fill_(prompt_mask == 0, float("-inf"))
            self.prefix_bias = bias[:, None, None, :]

    @classmethod
    def from_dynamic(
        cls, cache: DynamicCache, attention_mask: torch.Tensor | None = None
    ) -> SharedPrefixCache:
        """Adopt a prompt forward's cache (one row per prompt) without copying its tensors.

        ``attention_mask``: ``[P, >= L]`` 1 for prompt tokens, 0 for padding (its first ``L``
        columns are used; None: no padding). The source cache is left unchanged and can be
        adopted again, e.g. by another beam search over the same prompts.
        """
        layers = []
        for layer in cache.layers:
            # Sliding-window layers qualify when the window holds the whole sequence (checked by
            # shared_prefix_support); then they hold the full prompt like a DynamicLayer.
            if (
                not isinstance(layer, DynamicLayer)
                or layer.keys is None
                or layer.values is None
                or layer.keys.dim() != 4
            ):
                raise ValueError(f"a shared-prefix cache adopts DynamicLayers, got {layer!r}")
            layers.append(SharedPrefixLayer(layer.keys, layer.values))
        if not layers:
            raise ValueError("the prompt cache is empty (run the prompt forward first)")
        length = layers[0].prefix_keys.shape[-2]
        if any(x.prefix_keys.shape[-2] != length for x in layers):
            raise ValueError("the prompt cache's layers hold different lengths")
        mask = None if attention_mask is None else attention_mask[:, :length]
        return cls(layers, mask)

    @property
    def shared_layers(self) -> list[SharedPrefixLayer]:
        """The cache's layers, all :class:`SharedPrefixLayer` (transformers types them as any
        cache layer)."""
        return cast("list[SharedPrefixLayer]", self.layers)

    def reorder_beams(self, rows: torch.Tensor) -> None:
        """Keep rows ``rows[i, j]`` as beam ``j`` of prompt ``i``; ``rows`` is int64
        ``[P_new, W_new]`` indexing the current rows, each line holding rows of one prompt and
        the lines' prompts a subsequence of the current prompts in order (the prompts that are
        left out leave the cache, their prefix included)."""
        if rows.dim() != 2 or rows.shape[0] > self.num_prompts:
            raise ValueError(
                f"rows must be [prompts <= {self.num_prompts}, beams], got {tuple(rows.shape)}"
            )
        prompts = None
        if rows.shape[0] < self.num_prompts:
            prompts = torch.div(rows[:, 0], self.beams, rounding_mode="floor")
        flat = rows.reshape(-1)
        for layer in self.shared_layers:
            layer.select(prompts, flat)
        if prompts is not None and self.prefix_bias is not None:
            self.prefix_bias = self.prefix_bias.index_select(0, prompts)
        self.num_prompts, self.beams = int(rows.shape[0]), int(rows.shape[1])

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Transformers' beam reorder: ``beam_idx`` ``[P * W]`` keeps every prompt, each row
        taking a row of its own prompt (see :meth:`reorder_beams`)."""
        self.reorder_beams(beam_idx.view(self.num_prompts, -1))


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The ``igdbeam_shared_prefix`` entry of transformers' attention registry.

    ``key`` / ``value`` are the layer's suffix (what :meth:`SharedPrefixLayer.update`
    returned); the prefix comes from the :class:`SharedPrefixCache` in ``kwargs["igdbeam_kv"]``.
    ``attention_mask`` is None (no mask function is registered under this name): the prefix's
    padding is the cache's bias and every suffix token is visible to its own beam.
    """
    del attention_mask, dropout  # decoding runs in eval mode; the mask lives in the cache
    cache = kwargs.get(KV_KWARG)
    if not isinstance(cache, SharedPrefixCache):
        raise ValueError(
            f"the {ATTENTION_NAME!r} attention runs only inside igdbeam's decoding steps "
            "(igdbeam.decoding.kv_cache.decode_forward with a SharedPrefixCache)"
        )
    # ``layer_idx`` is a plain int attribute of the Llama family's attention modules.
    layer = cache.shared_layers[cast(int, module.layer_idx)]
    cache.attention_calls += 1
    scale = float(scaling) if scaling is not None else query.shape[-1] ** -0.5
    out = cascade_attention(
        query, layer.prefix_keys, layer.prefix_values, cache.prefix_bias, key, value, scale
    )
    return out, None


AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)


def _view_blocker(module: torch.nn.Module) -> str | None:
    """Why calling a shallow copy of ``module`` would not run the copy's own forward, or None."""
    if "forward" in module.__dict__:
        return (
            f"{type(module).__name__}.forward is replaced on the instance (a wrapper, "
            "torch.compile, or a hook such as accelerate's device_map / offloading hooks)"
        )
    if module.__dict__.get("_compiled_call_impl") is not None:
        return f"{type(module).__name__} is compiled (Module.compile)"
    return None


def _view_path(model: torch.nn.Module, config: Any) -> dict[int, torch.nn.Module]:
    """The modules an attention view copies: every module whose ``config`` is ``config``, and
    its ancestors up to ``model`` (by ``id``)."""
    path: dict[int, torch.nn.Module] = {}

    def visit(module: torch.nn.Module) -> bool:
        needed = module.__dict__.get("config") is config
        for child in module._modules.values():
            if child is not None and visit(child):
                needed = True
        if needed:
            path[id(module)] = module
        return needed

    visit(model)
    return path


def attention_view_blocker(model: Any) -> str | None:
    """Why :func:`attention_view` cannot view ``model``, or None when it can."""
    if not isinstance(model, torch.nn.Module):
        return f"{type(model).__name__} is not a torch.nn.Module"
    config = getattr(model, "config", None)
    if config is None:
        return f"{type(model).__name__} has no config"
    for module in _view_path(model, config).values():
        reason = _view_blocker(module)
        if reason is not None:
            return reason
    return None


def attention_view(model: Any) -> torch.nn.Module:
    """A view of ``model`` whose attention layers run igdbeam's shared-prefix attention.

    Transformers picks each layer's attention function by ``config._attn_implementation``. The
    view copies (shallowly) every module that holds the model's config, and their ancestors,
    giving them a copy of the config whose ``_attn_implementation`` is ``igdbeam_shared_prefix``;
    every other module, every parameter and buffer is the model's own, shared. Neither the model
    nor its config is changed, so a view is private to the search that made it and any number of
    views (threads) may run on one model at once. The base model's mask code also reads the
    copy: no mask function is registered under this name, so decode forwards build no mask (the
    prompts' padding is the cache's bias).

    Raises:
        ValueError: the model cannot be viewed (:func:`attention_view_blocker` says why).
    """
    reason = attention_view_blocker(model)
    if reason is not None:
        raise ValueError(f"cannot decode with the shared-prefix cache: {reason}")
    config = model.config
    view_config = object.__new__(type(config))
    view_config.__dict__.update(config.__dict__)
    view_config.__dict__["_attn_implementation_internal"] = ATTENTION_NAME
    if view_config._attn_implementation != ATTENTION_NAME:  # the property's storage moved
        raise RuntimeError(
            f"cannot select the {ATTENTION_NAME!r} attention on a copy of "
            f"{type(config).__name__}; decode with kv_cache='dynamic'"
        )
    path = _view_path(model, config)
    copies: dict[int, torch.nn.Module] = {}

    def copy_of(module: torch.nn.Module) -> torch.nn.Module:
        if id(module) not in path:
            return module
        if id(module) in copies:  # a module reached twice (shared) gets one copy
            return copies[id(module)]
        clone = object.__new__(type(module))
        clone.__dict__.update(module.__dict__)
        copies[id(module)] = clone
        clone.__dict__["_modules"] = {
            name: None if child is None else copy_of(child)
            for name, child in module._modules.items()
        }
        if module.__dict__.get("config") is config:
            clone.__dict__["config"] = view_config
        return clone

    return copy_of(model)


def decode_forward(
    model: Any, inputs: dict[str, Any], cache: Any, view: torch.nn.Module | None = None
) -> Any:
    """Run one decoding forward; with a :class:`SharedPrefixCache` through cascade attention.

    With a shared-prefix cache the forward runs on ``view`` (an :func:`attention_view` of
    ``model``; made here when None: a search makes it once and passes it to every step) with
    the cache passed to the attention function. The model and its config are never changed.

    Raises:
        RuntimeError: the cascade attention did not serve every layer (the model's forward
            bypassed the view), so the result would be wrong.
    """
    if not isinstance(cache, SharedPrefixCache):
        return model(**inputs, return_dict=True)
    if view is None:
        view = attention_view(model)
    cache.attention_calls = 0
    out = view(**inputs, return_dict=True, **{KV_KWARG: cache})
    if cache.attention_calls != len(cache.layers):
        raise RuntimeError(
            f"the shared-prefix attention ran in {cache.attention_calls} of "
            f"{len(cache.layers)} layers: {type(model).__name__}'s forward does not go through "
            "igdbeam's attention view; decode it with kv_cache='dynamic'"
        )
    return out


def shared_prefix_kwargs(model_kwargs: dict[str, Any], cache_key: str) -> dict[str, Any]:
    """A copy of a prompt forward's model kwargs whose cache (``model_kwargs[cache_key]``, a
    ``DynamicCache``) is adopted by a new :class:`SharedPrefixCache`; the inputs are unchanged."""
    kwargs = dict(model_kwargs)
    kwargs[cache_key] = SharedPrefixCache.from_dynamic(
        model_kwargs[cache_key], model_kwargs.get("attention_mask")
    )
    return kwargs


def _attention_layers(model: Any) -> list[torch.nn.Module | None]:
    """The attention modules of a ``*ForCausalLM`` (a PEFT model's base model's; None for a
    decoder layer without ``self_attn``)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        return []
    return [getattr(layer, "self_attn", None) for layer in layers]


def shared_prefix_support(model: Any, total_length: int) -> str | None:
    """Why ``model`` cannot decode with a :class:`SharedPrefixCache`, or None when it can.

    ``total_length``: the longest sequence of the search (prompt width plus generated tokens),
    which must fit in a sliding window if the model has one.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SHARED_PREFIX_MODEL_TYPES:
        supported = ", ".join(sorted(SHARED_PREFIX_MODEL_TYPES))
        return f"model type {model_type!r} is not one of {supported}"
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder models are not supported"
    attns = _attention_layers(model)
    if not attns or any(
        a is None or not hasattr(a, "layer_idx") or a.config is not config for a in attns
    ):
        return f"{type(model).__name__} does not have Llama-style attention layers"
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or []
    windowed = model_type == "mistral" or "sliding_attention" in layer_types
    if windowed and window is not None and total_length > int(window):
        return f"the sequence ({total_length} tokens) is longer than the sliding window ({window})"
    return attention_view_blocker(model)


def resolve_kv_cache(model: Any, kv_cache: str, total_length: int) -> str:
    """The cache a search uses: ``"shared_prefix"`` or ``"dynamic"``.

    ``kv_cache``: ``"auto"`` (shared prefix where :func:`shared_prefix_support` allows it,
    else dynamic), ``"shared_prefix"`` (ValueError where unsupported) or ``"dynamic"``.
    """
    if kv_cache not in KV_CACHE_MODES:
        raise ValueError(f"kv_cache must be one of {KV_CACHE_MODES}, got {kv_cache!r}")
    if kv_cache == "dynamic":
        return "dynamic"
    reason = shared_prefix_support(model, total_length)
    if reason is None:
        return "shared_prefix"
    if kv_cache == "shared_prefix":
        raise ValueError(f"kv_cache='shared_prefix' is not supported here: {reason}")
    return "dynamic"
