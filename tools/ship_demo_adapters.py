"""Copy the demo's two adapters out of an `igdbeam experiment` folder into the package.

Usage (from the repository root, so that the package imported is this checkout's):

    PYTHONPATH=python python tools/ship_demo_adapters.py benchmarks/quality/ml-100k-cpu

Writes python/igdbeam/adapters/ml-100k-smollm2-lora8/{plain,igd}/ (adapter_config.json with its
base recorded as "smollm2", adapter_model.safetensors) and prints the SHA-256 pins to paste into
python/igdbeam/demo_adapters.py.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from igdbeam.app.assets import sha256_file
from igdbeam.app.demo_adapters import ADAPTER_FILES, DEMO_RUNS, SHIPPED_DIR
from igdbeam.app.experiment import run_name

SOURCE_PACKAGE = Path(__file__).resolve().parents[1] / "python" / "igdbeam"


def main(experiment_dir: str, beta: float = 0.1) -> None:
    """Copy the adapters of ``DEMO_RUNS`` into the source tree and print their SHA-256 pins."""
    if not SHIPPED_DIR.resolve().is_relative_to(SOURCE_PACKAGE):
        sys.exit(
            f"igdbeam was imported from {SHIPPED_DIR.parents[2]}, not from this checkout: "
            "run with PYTHONPATH=python from the repository root"
        )
    pins = {}
    for name, (loss, seed) in DEMO_RUNS.items():
        src = Path(experiment_dir) / "models" / run_name(loss, seed, beta) / "model"
        dst = SHIPPED_DIR / name
        dst.mkdir(parents=True, exist_ok=True)
        config = json.loads((src / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = "smollm2"
        if isinstance(config.get("target_modules"), list):  # peft stores a set: any order
            config["target_modules"] = sorted(config["target_modules"])
        (dst / "adapter_config.json").write_text(
            json.dumps(config, indent=2, sort_keys=True) + "\n"
        )
        shutil.copyfile(src / "adapter_model.safetensors", dst / "adapter_model.safetensors")
        pins[name] = {f: sha256_file(dst / f) for f in ADAPTER_FILES}
    print(json.dumps(pins, indent=4))


if __name__ == "__main__":
    main(sys.argv[1])
