"""The native ops (mirrors ``csrc/cpu`` and ``csrc/cuda``): trie walks, label token weights, the
two decode steps and the per-request item filters, each a thin typed wrapper over one binding.
"""
