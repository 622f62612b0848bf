"""Build time and memory of the native trie against a Python dict trie (reference-code style).

Run: ``pytest benchmarks/bench_trie_build.py --benchmark-only`` (``IGDBEAM_BENCH_QUICK=1``
keeps only the 10k catalog; the 1M dict-trie baseline runs only with
``IGDBEAM_BENCH_DICT_1M=1`` because it needs minutes and several GB).
"""

from __future__ import annotations

import math
import os
import tracemalloc
from typing import Any

import pytest

from benchmarks.conftest import QUICK
from factories.catalogs import SyntheticCatalog, synthetic_catalog
from igdbeam import ItemTrie

SIZES = [10_000] if QUICK else [10_000, 100_000, 1_000_000]


def title_catalog(num_items: int) -> SyntheticCatalog:
    """Tokenized-title-like paths: 10-30 Zipf-distributed tokens of a 49,152 vocabulary + EOS."""
    return synthetic_catalog(num_items, 49_152, zipf=1.2, min_len=10, max_len=30)


class DictTrie:
    """The public reference code's style: nested dicts, counts and entropies per prefix node."""

    def __init__(self, paths: list[list[int]]) -> None:
        self.root: dict[str, Any] = {"children": {}, "items": []}
        for item, path in enumerate(paths):
            node = self.root
            for tok in path:
                node = node["children"].setdefault(tok, {"children": {}, "items": []})
            node["items"].append(item)
        total = len(paths)
        self._entropy(self.root, total)

    def _entropy(self, root: dict[str, Any], total: int) -> None:
        # Post-order without recursion limits: H(n) = sum of leaf terms below n.
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            if done:
                h = sum(c["entropy"] for c in node["children"].values())
                if node["items"]:
                    p = len(node["items"]) / total
                    h += -p * math.log(p)
                node["entropy"] = h
                for c in node["children"].values():
                    c["ig"] = h - c["entropy"] if len(node["children"]) > 1 else 0.0
            else:
                stack.append((node, True))
                stack.extend((c, False) for c in node["children"].values())


def _dict_allowed(n: int) -> bool:
    return n < 1_000_000 or os.environ.get("IGDBEAM_BENCH_DICT_1M", "0") == "1"


@pytest.mark.parametrize("num_items", SIZES)
def test_build_native(benchmark: Any, ratios: Any, num_items: int) -> None:
    offsets, tokens = title_catalog(num_items).csr()
    trie = benchmark.pedantic(
        ItemTrie.from_csr, args=(offsets, tokens), rounds=3 if num_items >= 1_000_000 else 5
    )
    # Correctness before speed: the root's children are the distinct first tokens.
    assert trie.children(0)[0].tolist() == sorted(set(tokens[offsets[:-1]].tolist()))
    assert trie.num_items == num_items
    ratios.record(
        f"build/{num_items}",
        "igdbeam",
        benchmark,
        nodes=trie.num_nodes,
        igdbeam_bytes_per_node=trie.nbytes / trie.num_nodes,
    )


@pytest.mark.parametrize("num_items", SIZES)
def test_build_dict_trie(benchmark: Any, ratios: Any, num_items: int) -> None:
    if not _dict_allowed(num_items):
        pytest.skip("the 1M dict trie needs minutes and GBs; set IGDBEAM_BENCH_DICT_1M=1")
    catalog = title_catalog(num_items)
    offsets, tokens = catalog.csr()
    paths = catalog.paths()
    tracemalloc.start()
    DictTrie(paths)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    trie = benchmark.pedantic(DictTrie, args=(paths,), rounds=1 if num_items >= 100_000 else 3)
    assert sorted(trie.root["children"]) == sorted(set(tokens[offsets[:-1]].tolist()))
    nodes = ItemTrie.from_csr(offsets, tokens).num_nodes
    ratios.record(f"build/{num_items}", "dict", benchmark, dict_bytes_per_node=peak / nodes)
