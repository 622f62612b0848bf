"""Slow, obviously-correct float64 oracles that judge the native backends.

The spec is shared/spec/IGD.md. ``trie``: the IGD quantities of a prefix dictionary; ``loss``:
the weighted losses and their gradients; ``decode``: the reference logits processor and
brute-force beam scores. Nothing here shares code with the package.
"""
