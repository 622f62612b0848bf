"""The optional packages each ``igdbeam`` command needs, checked right after its arguments are
parsed: a missing one ends the command with one ``igdbeam: error: ...`` line and exit status 2
before any data is built, any model loaded, any row decoded or any step trained.

Packages are looked up, not imported (see :func:`_importable`), so the check costs
milliseconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

# package -> what igdbeam uses it for.
PURPOSES: dict[str, str] = {
    "matplotlib": "the PNG plots",
    "peft": "LoRA adapters",
    "accelerate": "transformers' Trainer and multi-process runs",
    "gguf": "converting the SmolLM2 GGUF file into a transformers checkpoint (once)",
    "starlette": "the HTTP service",
    "uvicorn": "the HTTP service",
    "vllm": "the vLLM engine",
    "rectools": "the SASRec baseline",
}
# package -> the igdbeam extra that installs it (default: pipeline).
EXTRAS: dict[str, str] = {
    "starlette": "serve",
    "uvicorn": "serve",
    "vllm": "vllm",
    "rectools": "baselines",
}
INSTALL_HINT = "pip install 'igdbeam[pipeline]'"


def _smollm2_converted() -> bool:
    """True when the SmolLM2 checkpoint is already converted in the cache (no gguf needed)."""
    from igdbeam.app.assets import SMOLLM2_FOLDER, cache_dir

    folder = cache_dir() / "models" / SMOLLM2_FOLDER
    return (folder / "config.json").is_file() and (folder / ".igdbeam-complete").is_file()


def _needs_smollm2(model: str | None) -> bool:
    return model == "smollm2" and not _smollm2_converted()


def _experiment_lora(args: argparse.Namespace) -> bool:
    """Whether ``igdbeam experiment`` trains LoRA adapters (``--lora-r`` or the profile's)."""
    if args.lora_r is not None:
        return bool(args.lora_r > 0)
    from igdbeam.app.experiment_profiles import PROFILES

    return PROFILES[args.profile].lora_r > 0


def needed_packages(args: argparse.Namespace) -> list[str]:
    """The optional packages the parsed command ``args`` will import, in a fixed order."""
    command = args.command
    model = getattr(args, "model", None)
    needed: list[str] = []
    if command == "stats":
        needed = ["matplotlib"] if args.plot is not None else []
    elif command == "train":
        needed = ["accelerate"] + (["peft"] if args.lora_r > 0 else [])
    elif command in ("recommend", "evaluate"):
        needed = ["accelerate"] + (["matplotlib"] if command == "evaluate" else [])
    elif command == "demo":
        model = "smollm2"
        needed = ["peft", "matplotlib"] + (["accelerate"] if args.retrain else [])
    elif command == "serve":
        needed = ["starlette", "uvicorn"] + (["vllm"] if args.engine == "vllm" else [])
    elif command == "experiment" and args.baselines_only:
        needed = ["rectools"]
    elif command == "experiment":
        needed = ["accelerate", "matplotlib"]
        if not args.report_only and _experiment_lora(args):
            needed.append("peft")
    if command != "prepare" and _needs_smollm2(model):
        needed.append("gguf")
    return needed


def _importable(package: str) -> str | None:
    """None when ``package`` can be imported, else the reason it cannot.

    Looked up with ``importlib.util.find_spec`` (milliseconds; importing peft or accelerate
    would cost seconds before the first line of output). A package that is present but broken
    is not caught here; the plots are guarded by :func:`igdbeam.app.cli.plots.try_plot`.
    """
    if package in sys.modules:
        return None
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError) as exc:
        return "not installed" if getattr(exc, "name", package) == package else f"broken: {exc}"
    return None if found else "not installed"


def missing_packages_message(args: argparse.Namespace) -> str | None:
    """One line naming every optional package ``args``'s command needs and cannot import (what
    for, and how to install it), or None when all import."""
    problems = []
    for package in needed_packages(args):
        reason = _importable(package)
        if reason is not None:
            problems.append((package, reason))
    if not problems:
        return None
    names = ", ".join(f"'{p}' ({PURPOSES[p]}; {why})" for p, why in problems)
    plain = " ".join(p for p, _ in problems)
    extras = sorted({EXTRAS.get(p, "pipeline") for p, _ in problems})
    hint = f"pip install 'igdbeam[{','.join(extras)}]'"
    return (
        f"'igdbeam {args.command}' needs the optional package(s) {names}; install them with "
        f"{hint} (or pip install {plain}). Nothing was run"
    )


__all__ = ["EXTRAS", "INSTALL_HINT", "PURPOSES", "missing_packages_message", "needed_packages"]
