"""igdbeam: Information-Gain Debiasing (IGD) for LLM recommenders.

A native item trie with exact entropy / information-gain tables, the IG-weighted fine-tuning
loss, and IG-reweighted trie-constrained beam search for Hugging Face transformers.
"""

from igdbeam._native import built_with_cuda, cuda_available
from igdbeam.decode_ops import beam_step, processor_step
from igdbeam.generate import RecommendationOutput, custom_generate, generate
from igdbeam.processor import IGDLogitsProcessor
from igdbeam.titles import tokenize_titles_in_context
from igdbeam.trie import ItemTrie, popularity_weights

__version__ = "0.1.0"

__all__ = [
    "IGDLogitsProcessor",
    "ItemTrie",
    "RecommendationOutput",
    "__version__",
    "beam_step",
    "built_with_cuda",
    "cuda_available",
    "custom_generate",
    "generate",
    "popularity_weights",
    "processor_step",
    "tokenize_titles_in_context",
]
