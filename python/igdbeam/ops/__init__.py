"""The native ops that take an ``ItemTrie`` plus tensors: label token weights, the two decode
steps and the per-request item filters, each a thin typed wrapper over one registered op
(``torch.ops.igdbeam.*``, :mod:`igdbeam.native.torch_ops`). (The trie's own native calls,
building and walking, live in ``igdbeam.trie``, the floor below.)
"""
