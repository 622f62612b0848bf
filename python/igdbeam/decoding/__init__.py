"""Decoding top-K items: ``generate``, the native beam search, the logits processor for
transformers' own beam search, and the shared-prefix KV cache.
"""
