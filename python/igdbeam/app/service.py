"""Building a service from a data folder and a model: catalog, trie, engine, application."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from igdbeam.serving.catalog import ServingCatalog


def load_catalog(
    data: str | Path,
    tokenizer: Any,
    *,
    template: str = "igd",
    catalog_scope: str = "all",
    max_prompt_tokens: int = 512,
) -> ServingCatalog:
    """The :class:`ServingCatalog` of a BIGRec data folder (``info.txt`` + ``train.csv``): the
    trie is built as ``igdbeam recommend`` builds it (popularity weights from the training
    targets)."""
    from igdbeam.app.pipeline import build_trie
    from igdbeam.data import load_dataset

    ds = load_dataset(Path(data), splits=("train",))
    trie = build_trie(ds, tokenizer, template, catalog=catalog_scope)
    return ServingCatalog(
        ds.catalog, tokenizer, trie, template=template, max_prompt_tokens=max_prompt_tokens
    )


def model_folder(model: str) -> Path:
    """The checkpoint folder of ``--model`` (``smollm2`` is the cached SmolLM2)."""
    from igdbeam.app.assets import AssetError, smollm2_checkpoint

    path = smollm2_checkpoint() if model == "smollm2" else Path(model)
    if not Path(path).is_dir():
        raise AssetError(f"model folder {str(path)!r} does not exist (or pass 'smollm2')")
    return Path(path)


def vllm_available() -> bool:
    """True when vLLM can be imported (its ``AsyncLLM`` engine)."""
    try:
        from vllm.v1.engine.async_llm import AsyncLLM  # noqa: F401
    except Exception:
        return False
    return True


def build_engine(
    data: str | Path,
    model: str,
    *,
    engine: str = "auto",
    template: str = "igd",
    catalog_scope: str = "all",
    num_beams: int = 10,
    length_penalty: float = 0.0,
    dtype: str = "float32",
    max_batch: int = 16,
    max_wait_ms: float = 5.0,
    max_prompt_tokens: int = 512,
    vllm_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Load the model and catalog and return a started engine.

    ``engine`` is ``transformers`` (micro-batched :func:`igdbeam.generate`), ``vllm``
    (:func:`igdbeam.vllm.agenerate` on an ``AsyncLLM``) or ``auto`` (vLLM when importable,
    else transformers). ``vllm_kwargs`` go to vLLM's ``AsyncEngineArgs``.
    """
    if engine == "auto":
        engine = "vllm" if vllm_available() else "transformers"
    if engine not in ("transformers", "vllm"):
        raise ValueError(f"engine must be 'transformers', 'vllm' or 'auto', got {engine!r}")
    from igdbeam.serving.engines import TransformersEngine, VLLMEngine

    if engine == "transformers":
        from igdbeam.app.assets import load_model_and_tokenizer

        lm, tok = load_model_and_tokenizer(model, dtype=dtype)
        cat = load_catalog(
            data,
            tok,
            template=template,
            catalog_scope=catalog_scope,
            max_prompt_tokens=max_prompt_tokens,
        )
        return TransformersEngine(
            lm,
            cat,
            num_beams=num_beams,
            length_penalty=length_penalty,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
        )

    if not vllm_available():
        raise ValueError("--engine vllm needs vLLM: pip install 'igdbeam[vllm]'")
    from transformers import AutoTokenizer
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    folder = model_folder(model)
    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    cat = load_catalog(
        data,
        tok,
        template=template,
        catalog_scope=catalog_scope,
        max_prompt_tokens=max_prompt_tokens,
    )
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    args = dict(
        model=str(folder),
        dtype=dtype,
        enable_prefix_caching=True,
        max_model_len=max_prompt_tokens + cat.trie.max_depth + 8,
    )
    args.update(vllm_kwargs or {})
    llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
    return VLLMEngine(llm, cat, num_beams=num_beams, length_penalty=length_penalty)
