"""The two LoRA adapters ``igdbeam demo`` compares, shipped with igdbeam and pinned by SHA-256.

They were produced by ``igdbeam experiment --profile cpu-large`` (MovieLens-100k,
SmolLM2-135M-Instruct, LoRA r=8 on the attention and MLP projections, 1,200 steps of 8 rows from the
whole training split, lr 5e-4, bfloat16 (the igd fine-tune's last 400 steps in float32: its
``train_log.json`` says why), 5 history items, seed 0, catalog of the training targets with raw
popularity counts): the ``plain`` (cross-entropy) and the ``igd`` (beta 0.1) fine-tunes,
stored in bfloat16, their base recorded as ``smollm2``; the committed run is
``benchmarks/quality/ml-100k-cpu-large/``. ``igdbeam demo --retrain`` trains them again into the
cache with the same code and settings (:func:`train_demo_adapters`).
"""

from __future__ import annotations

from pathlib import Path

from igdbeam.app.assets import AssetError, cache_dir, sha256_file

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "adapters" / "ml-100k-smollm2-lora8"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# SHA-256 of the shipped files: a changed or truncated file is refused, not silently used.
SHIPPED_SHA256: dict[str, dict[str, str]] = {
    "plain": {
        "adapter_config.json": "e8c2c13192d821f8e65036713bff046cdcf873257f1695b5ac0ca3899d9743e6",
        "adapter_model.safetensors": (
            "b50e383597ca62000f1ce401049034c4dc57da60e594fc41c9f8bb31dba45f24"
        ),
    },
    "igd": {
        "adapter_config.json": "ecad54bf1a67209193b3b19defa71bd31fe88a2794dabd7aff6f16c373370e6c",
        "adapter_model.safetensors": (
            "90da79e5f8a77047769340b8be877830d6dcade9740f11606730ad01a2f04656"
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
    """Train the demo's two adapters as the shipped ones were trained (``cpu-large`` profile).

    The fine-tunes land in ``out`` (default ``<cache>/demo-adapters-cpu-large``) as an ``igdbeam
    experiment`` folder checkpointed every 100 steps, so an interrupted retrain resumes; about 70
    minutes per adapter on 2 idle CPU cores (bfloat16). Returns ``{"plain": folder, "igd": folder}``
    of the adapter folders.
    """
    from dataclasses import replace

    from igdbeam.app.experiment import PROFILES, Experiment

    profile = replace(PROFILES["cpu-large"], losses=("plain", "igd"), seeds=(0,))
    exp = Experiment(out or cache_dir() / "demo-adapters-cpu-large", profile, progress=progress)
    exp.setup()
    folders = {}
    for name, (loss, seed) in DEMO_RUNS.items():
        exp.train(loss, seed)
        folders[name] = exp.model_dir(loss, seed) / "model"
    return folders


def adapter_folders(*, retrain: bool = False, progress: bool = True) -> dict[str, Path]:
    """The demo's adapters: retrained into the cache with ``retrain``, else the shipped ones."""
    return train_demo_adapters(progress=progress) if retrain else shipped_adapters()
