"""igdbeam: Information-Gain Debiasing (IGD) for LLM recommenders.

A native item trie with exact entropy / information-gain tables, the IG-weighted fine-tuning
loss, and IG-reweighted trie-constrained beam search for Hugging Face transformers.

The public names below are imported on first use (PEP 562), so ``import igdbeam`` and the
``igdbeam`` command's ``--help`` / ``--version`` do not pay for torch and transformers until a
name that needs them is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from igdbeam._version import __version__

# Public name -> the module that defines it (imported on first access).
_LAZY_NAMES: dict[str, str] = {
    "Decoding": "igdbeam.decoding.generate",
    "RecommendationOutput": "igdbeam.decoding.generate",
    "custom_generate": "igdbeam.decoding.generate",
    "generate": "igdbeam.decoding.generate",
    "generate_many": "igdbeam.decoding.generate",
    "IGDLogitsProcessor": "igdbeam.decoding.processor",
    "CudaUnavailableError": "igdbeam.errors",
    "IGDBeamError": "igdbeam.errors",
    "InvalidIdError": "igdbeam.errors",
    "TrieFormatError": "igdbeam.errors",
    "VocabularyError": "igdbeam.errors",
    "diversity_metrics": "igdbeam.evaluation.metrics",
    "evaluate_recommendations": "igdbeam.evaluation.metrics",
    "ranking_metrics": "igdbeam.evaluation.metrics",
    "built_with_cuda": "igdbeam.native.library",
    "cuda_available": "igdbeam.native.library",
    "beam_step": "igdbeam.ops.decode_steps",
    "processor_step": "igdbeam.ops.decode_steps",
    "TokenWeights": "igdbeam.ops.label_weights",
    "label_token_weights": "igdbeam.ops.label_weights",
    "positional_token_weights": "igdbeam.ops.label_weights",
    "NodeFilters": "igdbeam.ops.node_filters",
    "exclude_items": "igdbeam.ops.node_filters",
    "node_filters": "igdbeam.ops.node_filters",
    "CFTCollator": "igdbeam.training.collators",
    "CompletionCollator": "igdbeam.training.collators",
    "is_adapter_folder": "igdbeam.training.lora",
    "load_model_with_adapter": "igdbeam.training.lora",
    "lora_config": "igdbeam.training.lora",
    "cft_loss": "igdbeam.training.loss",
    "igd_loss": "igdbeam.training.loss",
    "igd_loss_from_log_probs": "igdbeam.training.loss",
    "pos_loss": "igdbeam.training.loss",
    "TEMPLATES": "igdbeam.training.prompts",
    "PromptTemplate": "igdbeam.training.prompts",
    "build_example": "igdbeam.training.prompts",
    "trie_for_catalog": "igdbeam.training.prompts",
    "ItemTrie": "igdbeam.trie.item_trie",
    "popularity_weights": "igdbeam.trie.popularity",
    "tokenize_titles_in_context": "igdbeam.trie.titles",
    # The Trainer integration imports transformers.Trainer / TRL (seconds).
    "IGDLossFunc": "igdbeam.training.loss_func",
    "make_compute_loss_func": "igdbeam.training.loss_func",
    "IGDTrainer": "igdbeam.training.trainer",
    "IGDSFTTrainer": "igdbeam.training.sft_trainer",
}
# Subpackages reachable as attributes (``igdbeam.errors.TrieFormatError``) without an import.
_SUBMODULES = frozenset(
    {
        "app",
        "data",
        "decoding",
        "errors",
        "evaluation",
        "io",
        "native",
        "ops",
        "precision",
        "serving",
        "training",
        "trie",
        "vllm",
    }
)

if TYPE_CHECKING:  # the names as static type checkers and IDEs see them
    from igdbeam.decoding.generate import (
        Decoding,
        RecommendationOutput,
        custom_generate,
        generate,
        generate_many,
    )
    from igdbeam.decoding.processor import IGDLogitsProcessor
    from igdbeam.errors import (
        CudaUnavailableError,
        IGDBeamError,
        InvalidIdError,
        TrieFormatError,
        VocabularyError,
    )
    from igdbeam.evaluation.metrics import (
        diversity_metrics,
        evaluate_recommendations,
        ranking_metrics,
    )
    from igdbeam.native.library import built_with_cuda, cuda_available
    from igdbeam.ops.decode_steps import beam_step, processor_step
    from igdbeam.ops.label_weights import (
        TokenWeights,
        label_token_weights,
        positional_token_weights,
    )
    from igdbeam.ops.node_filters import NodeFilters, exclude_items, node_filters
    from igdbeam.training.collators import CFTCollator, CompletionCollator
    from igdbeam.training.lora import is_adapter_folder, load_model_with_adapter, lora_config
    from igdbeam.training.loss import cft_loss, igd_loss, igd_loss_from_log_probs, pos_loss
    from igdbeam.training.loss_func import IGDLossFunc, make_compute_loss_func
    from igdbeam.training.prompts import TEMPLATES, PromptTemplate, build_example, trie_for_catalog
    from igdbeam.training.sft_trainer import IGDSFTTrainer
    from igdbeam.training.trainer import IGDTrainer
    from igdbeam.trie.item_trie import ItemTrie
    from igdbeam.trie.popularity import popularity_weights
    from igdbeam.trie.titles import tokenize_titles_in_context


def __getattr__(name: str) -> Any:
    """Import a public name (or a subpackage) on first access and cache it on the package."""
    module = _LAZY_NAMES.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"igdbeam.{name}")
    else:
        raise AttributeError(f"module 'igdbeam' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names, the subpackages and the module's own attributes."""
    return sorted(set(globals()) | set(_LAZY_NAMES) | _SUBMODULES)


__all__ = [
    "CFTCollator",
    "CompletionCollator",
    "CudaUnavailableError",
    "Decoding",
    "IGDBeamError",
    "IGDLogitsProcessor",
    "IGDLossFunc",
    "IGDSFTTrainer",
    "IGDTrainer",
    "InvalidIdError",
    "ItemTrie",
    "NodeFilters",
    "PromptTemplate",
    "RecommendationOutput",
    "TEMPLATES",
    "TokenWeights",
    "TrieFormatError",
    "VocabularyError",
    "__version__",
    "beam_step",
    "build_example",
    "built_with_cuda",
    "cft_loss",
    "cuda_available",
    "custom_generate",
    "diversity_metrics",
    "evaluate_recommendations",
    "exclude_items",
    "generate",
    "generate_many",
    "igd_loss",
    "igd_loss_from_log_probs",
    "is_adapter_folder",
    "label_token_weights",
    "load_model_with_adapter",
    "lora_config",
    "make_compute_loss_func",
    "node_filters",
    "popularity_weights",
    "pos_loss",
    "positional_token_weights",
    "processor_step",
    "ranking_metrics",
    "tokenize_titles_in_context",
    "trie_for_catalog",
]
