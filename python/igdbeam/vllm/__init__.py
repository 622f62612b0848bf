"""IGD trie-constrained beam search on vLLM (``pip install "igdbeam[vllm]"``).

* :func:`generate` — offline, on a ``vllm.LLM``;
* :func:`agenerate` — online, on a ``vllm.v1.engine.async_llm.AsyncLLM`` (concurrent calls share
  the engine's continuous batching);
* :class:`TrieSearch` — the engine-free step machine both drive: it lists, per running beam, the
  token sequence and the trie children whose log-probs it needs, and runs igdbeam's native beam
  step on the answers (:class:`CompactTrie` rebuilds the rows).

Both return :class:`igdbeam.RecommendationOutput`, equal to :func:`igdbeam.generate`'s for the
same model, prompts and settings. vLLM is imported only when an engine is driven.
"""

from igdbeam.vllm.compact import CompactTrie
from igdbeam.vllm.engine import agenerate, compact_trie, generate, max_token_ids_per_request
from igdbeam.vllm.search import ChildQuery, TrieSearch

__all__ = [
    "ChildQuery",
    "CompactTrie",
    "TrieSearch",
    "agenerate",
    "compact_trie",
    "generate",
    "max_token_ids_per_request",
]
