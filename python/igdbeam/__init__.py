"""igdbeam: Information-Gain Debiasing (IGD) for LLM recommenders.

A native item trie with exact entropy / information-gain tables, the IG-weighted fine-tuning
loss, and IG-reweighted trie-constrained beam search for Hugging Face transformers.
"""

from igdbeam._native import built_with_cuda, cuda_available
from igdbeam.metrics import diversity_metrics, evaluate_recommendations, ranking_metrics
from igdbeam.prompts import TEMPLATES, PromptTemplate, build_example, trie_for_catalog
from igdbeam.titles import tokenize_titles_in_context
from igdbeam.trie import ItemTrie, popularity_weights

__version__ = "0.1.0"

__all__ = [
    "ItemTrie",
    "PromptTemplate",
    "TEMPLATES",
    "__version__",
    "build_example",
    "built_with_cuda",
    "cuda_available",
    "diversity_metrics",
    "evaluate_recommendations",
    "popularity_weights",
    "ranking_metrics",
    "tokenize_titles_in_context",
    "trie_for_catalog",
]
