"""Decoding top-K items: ``generate`` (the entry points; its settings, checks and prompt forward
in ``inputs``, its result in ``outputs``), the native beam search, the logits processor for
transformers' own beam search, and the shared-prefix KV cache.
"""
