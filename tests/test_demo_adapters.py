"""The demo's shipped LoRA adapters: every file matches its SHA-256 pin, a changed file is refused,
and the adapters are the committed ``cpu-large`` run's fine-tunes (same weights)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from igdbeam.app.assets import AssetError
from igdbeam.app.demo_adapters import (
    ADAPTER_FILES,
    DEMO_RUNS,
    SHIPPED_DIR,
    SHIPPED_SHA256,
    shipped_adapters,
    verify_adapter,
)
from igdbeam.app.experiment_profiles import PROFILES, run_name

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "quality" / "ml-100k-cpu-large"


def test_every_shipped_file_matches_its_pin() -> None:
    folders = shipped_adapters()
    assert sorted(folders) == sorted(DEMO_RUNS) == sorted(SHIPPED_SHA256)
    for name, folder in folders.items():
        assert folder == SHIPPED_DIR / name
        assert sorted(SHIPPED_SHA256[name]) == sorted(ADAPTER_FILES)
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "smollm2" and config["r"] == 8


def test_a_changed_file_is_refused(tmp_path: Path) -> None:
    copy = shutil.copytree(SHIPPED_DIR / "plain", tmp_path / "plain")
    weights = copy / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(AssetError, match="has SHA-256"):
        verify_adapter(copy, SHIPPED_SHA256["plain"])
    weights.unlink()
    with pytest.raises(AssetError, match="is missing"):
        verify_adapter(copy, SHIPPED_SHA256["plain"])


@pytest.mark.skipif(not RUN.is_dir(), reason="the committed cpu-large run is not in this tree")
def test_the_shipped_adapters_are_the_cpu_large_fine_tunes() -> None:
    from safetensors.torch import load_file

    beta = PROFILES["cpu-large"].beta
    for name, (loss, seed) in DEMO_RUNS.items():
        source = RUN / "models" / run_name(loss, seed, beta) / "model"
        shipped = load_file(str(SHIPPED_DIR / name / "adapter_model.safetensors"))
        trained = load_file(str(source / "adapter_model.safetensors"))
        assert shipped.keys() == trained.keys()
        for key, tensor in trained.items():
            assert shipped[key].dtype == tensor.dtype and shipped[key].equal(tensor), key
