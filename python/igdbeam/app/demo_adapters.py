"""The two LoRA adapters ``igdbeam demo`` compares, shipped with igdbeam and pinned by SHA-256.

They were produced by ``igdbeam experiment --profile cpu`` (MovieLens-100k, SmolLM2-135M-Instruct,
LoRA r=8 on the attention and MLP projections, 100 steps of 8 rows from the latest 800 training
rows, 5 history items, seed 0, catalog of the training targets with raw popularity counts): the
``plain`` (cross-entropy) and the ``igd`` (beta 0.1) fine-tunes, stored in bfloat16, their base
recorded as ``smollm2``. ``igdbeam demo --retrain`` trains them again into the cache with the
same code and settings (:func:`train_demo_adapters`).
"""

from __future__ import annotations

from pathlib import Path

from igdbeam.app.assets import AssetError, cache_dir, sha256_file

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "adapters" / "ml-100k-smollm2-lora8"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# SHA-256 of the shipped files: a changed or truncated file is refused, not silently used.
SHIPPED_SHA256: dict[str, dict[str, str]] = {
    "plain": {
        "adapter_config.json": "9bc668382515c5c680bd56ba607a6ccbe03496ab3fe5759e7357fb854cbe612a",
        "adapter_model.safetensors": (
            "43681b27cdd2353f455fc598a6c3ce4fefc895acf6472c6de640309efc130f79"
        ),
    },
    "igd": {
        "adapter_config.json": "9bc668382515c5c680bd56ba607a6ccbe03496ab3fe5759e7357fb854cbe612a",
        "adapter_model.safetensors": (
            "27faefcdda82ab15e5804768d8e91814899e8bf7a4edc7d38f4eef6fc5753c77"
        ),
    },
}
DEMO_RUNS = {"plain": ("plain", 0), "igd": ("igd", 0)}


def verify_adapter(folder: Path, pins: dict[str, str]) -> Path:
    """Check every pinned file of an adapter folder against its SHA-256; return the folder."""
    for name, digest in pins.items():
        path = folder / name
        if not path.is_file():
            raise AssetError(f"adapter file {path} is missing (reinstall igdbeam or --retrain)")
        actual = sha256_file(path)
        if actual != digest:
            raise AssetError(
                f"adapter file {path} has SHA-256 {actual}, expected {digest} "
                "(reinstall igdbeam or use --retrain)"
            )
    return folder


def shipped_adapters() -> dict[str, Path]:
    """The verified folders of the shipped ``plain`` and ``igd`` adapters."""
    if not SHIPPED_SHA256:
        raise AssetError(
            "this igdbeam build ships no demo adapters; run 'igdbeam demo --retrain' to train them"
        )
    return {name: verify_adapter(SHIPPED_DIR / name, pins) for name, pins in SHIPPED_SHA256.items()}


def train_demo_adapters(out: Path | None = None, *, progress: bool = True) -> dict[str, Path]:
    """Train the demo's two adapters as the shipped ones were trained (cpu experiment profile).

    The fine-tunes land in ``out`` (default ``<cache>/demo-adapters``) as an ``igdbeam
    experiment`` folder, so an interrupted retrain resumes; about 20-30 minutes per adapter on 2
    CPU cores. Returns ``{"plain": folder, "igd": folder}`` of the adapter folders.
    """
    from dataclasses import replace

    from igdbeam.app.experiment import PROFILES, Experiment

    profile = replace(PROFILES["cpu"], losses=("plain", "igd"), seeds=(0,))
    exp = Experiment(out or cache_dir() / "demo-adapters", profile, progress=progress)
    exp.setup()
    folders = {}
    for name, (loss, seed) in DEMO_RUNS.items():
        exp.train(loss, seed)
        folders[name] = exp.model_dir(loss, seed) / "model"
    return folders


def adapter_folders(*, retrain: bool = False, progress: bool = True) -> dict[str, Path]:
    """The demo's adapters: retrained into the cache with ``retrain``, else the shipped ones."""
    return train_demo_adapters(progress=progress) if retrain else shipped_adapters()
