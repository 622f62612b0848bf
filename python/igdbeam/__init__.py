"""igdbeam: Information-Gain Debiasing (IGD) for LLM recommenders.

A native item trie with exact entropy / information-gain tables, the IG-weighted fine-tuning
loss, and IG-reweighted trie-constrained beam search for Hugging Face transformers.
"""

from igdbeam.decoding.generate import (
    Decoding,
    RecommendationOutput,
    custom_generate,
    generate,
    generate_many,
)
from igdbeam.decoding.processor import IGDLogitsProcessor
from igdbeam.errors import IGDBeamError, InvalidIdError, TrieFormatError, VocabularyError
from igdbeam.evaluation.metrics import diversity_metrics, evaluate_recommendations, ranking_metrics
from igdbeam.native.library import built_with_cuda, cuda_available
from igdbeam.ops.decode_steps import beam_step, processor_step
from igdbeam.ops.label_weights import TokenWeights, label_token_weights, positional_token_weights
from igdbeam.ops.node_filters import NodeFilters, exclude_items, node_filters
from igdbeam.training.collators import CFTCollator, CompletionCollator
from igdbeam.training.lora import is_adapter_folder, load_model_with_adapter, lora_config
from igdbeam.training.loss import cft_loss, igd_loss, igd_loss_from_log_probs, pos_loss
from igdbeam.training.prompts import TEMPLATES, PromptTemplate, build_example, trie_for_catalog
from igdbeam.trie.item_trie import ItemTrie
from igdbeam.trie.popularity import popularity_weights
from igdbeam.trie.titles import tokenize_titles_in_context

__version__ = "0.1.0"

# The Trainer integration imports transformers.Trainer / TRL (seconds); load it on first use.
_LAZY_MODULES = {
    "IGDLossFunc": "igdbeam.training.loss_func",
    "make_compute_loss_func": "igdbeam.training.loss_func",
    "IGDTrainer": "igdbeam.training.trainer",
    "IGDSFTTrainer": "igdbeam.training.sft_trainer",
}


def __getattr__(name: str) -> object:
    """Import the transformers Trainer integration lazily (``igdbeam.IGDTrainer`` etc.)."""
    if name in _LAZY_MODULES:
        import importlib

        return getattr(importlib.import_module(_LAZY_MODULES[name]), name)
    raise AttributeError(f"module 'igdbeam' has no attribute {name!r}")


__all__ = [
    "CFTCollator",
    "CompletionCollator",
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
