"""A slow, obviously-correct pure-Python IGD reference that judges the native backends.

Everything here follows ``shared/spec/IGD.md`` literally with dicts and floats (float64), with no
attempt at speed and no shared code with the package.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence


class ReferenceTrie:
    """Prefix dictionary over item paths: prefix tuple -> items below it."""

    def __init__(
        self,
        paths: Sequence[Sequence[int]],
        weights: Sequence[float] | None = None,
        entropy: str = "global",
    ) -> None:
        self.paths = [tuple(p) for p in paths]
        self.weights = [1.0] * len(paths) if weights is None else [float(w) for w in weights]
        total = sum(self.weights)
        # Duplicate paths share one leaf whose weight is the sum (spec section 1).
        leaf_weight: dict[tuple[int, ...], float] = defaultdict(float)
        for path, w in zip(self.paths, self.weights, strict=True):
            leaf_weight[path] += w
        self.leaf_weight = dict(leaf_weight)
        self.leaf_prob = {path: w / total for path, w in leaf_weight.items()}
        self.items_of_leaf: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for item, path in enumerate(self.paths):
            self.items_of_leaf[path].append(item)
        self.below: dict[tuple[int, ...], list[tuple[int, ...]]] = defaultdict(list)
        for path in leaf_weight:
            for d in range(len(path) + 1):
                self.below[path[:d]].append(path)
        self.children: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for prefix in self.below:
            if prefix:
                self.children[prefix[:-1]].append(prefix[-1])
        for prefix in self.children:
            self.children[prefix].sort()
        self.entropy_mode = entropy

    def entropy(self, prefix: Sequence[int]) -> float:
        """H(prefix): global partial entropy, or conditional (renormalised inside S(n))."""
        probs = [self.leaf_prob[p] for p in self.below[tuple(prefix)]]
        if self.entropy_mode == "global":
            return -sum(p * math.log(p) for p in probs if p > 0)
        mass = sum(probs)
        if mass == 0:
            return 0.0
        return -sum((p / mass) * math.log(p / mass) for p in probs if p > 0)

    def weight_below(self, prefix: Sequence[int]) -> float:
        """Summed item weight of the items whose path starts with ``prefix``."""
        return sum(self.leaf_weight[p] for p in self.below[tuple(prefix)])

    def info_gain(self, prefix: Sequence[int], token: int) -> float:
        """IG(token | prefix) = H(prefix) - H(prefix + token); exactly 0 for a zero-IG edge."""
        prefix = tuple(prefix)
        if self.is_zero_ig(prefix, token):
            return 0.0
        return self.entropy(prefix) - self.entropy(prefix + (token,))

    def is_zero_ig(self, prefix: Sequence[int], token: int) -> bool:
        """Zero IG: the child's siblings hold weight exactly 0 (a single child included)."""
        prefix = tuple(prefix)
        siblings = [t for t in self.children[prefix] if t != token]
        return sum(self.weight_below(prefix + (t,)) for t in siblings) == 0

    def normalized_info_gain(self, prefix: Sequence[int], token: int, rtol: float = 1e-9) -> float:
        """IG~ min-max normalised among the siblings; 0 when all siblings have equal IG."""
        prefix = tuple(prefix)
        igs = {t: self.info_gain(prefix, t) for t in self.children[prefix]}
        lo, hi = min(igs.values()), max(igs.values())
        if hi - lo <= rtol * max(abs(lo), abs(hi)):
            return 0.0
        return (igs[token] - lo) / (hi - lo)

    def path_info_gain(self, path: Sequence[int]) -> list[float]:
        """IG of each token along ``path``."""
        return [self.info_gain(path[:d], path[d]) for d in range(len(path))]

    def prefixes(self) -> list[tuple[int, ...]]:
        """Every node of the trie as its prefix tuple."""
        return list(self.below)
