"""What the CLI's commands load: the decoder, the dataset folder, the tokenizer, and the data,
model and trie of a run."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def load_decoder(spec: str) -> Callable[..., Any]:
    """The decoder named ``MODULE:FUNCTION`` (``--decoder``)."""
    from igdbeam.app.pipeline import resolve_decoder

    return resolve_decoder(spec)


def dataset_dir(args: argparse.Namespace) -> Path:
    """The ``--data`` folder, or the ``--dataset`` MovieLens folder (built on first use)."""
    if args.data is not None:
        return Path(args.data)
    from igdbeam.app.pipeline import prepare_movielens

    return prepare_movielens(args.dataset, progress=not getattr(args, "no_progress", False))


def tokenizer(model: str) -> Any:
    """The left-padding tokenizer of ``--model`` (``smollm2`` or a checkpoint folder)."""
    from transformers import AutoTokenizer

    from igdbeam.app.assets import AssetError, smollm2_checkpoint

    path = smollm2_checkpoint() if model == "smollm2" else Path(model)
    if not Path(path).is_dir():
        raise AssetError(f"model folder {str(path)!r} does not exist (or pass 'smollm2')")
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def setup(args: argparse.Namespace, splits: Sequence[str]) -> tuple[Any, Any, Any, Any]:
    """Load the dataset (each of ``splits`` must have rows), the model and its tokenizer, and
    build the trie: ``(dataset, model, tokenizer, trie)``."""
    import torch

    from igdbeam.app.assets import load_model_and_tokenizer
    from igdbeam.app.pipeline import build_trie
    from igdbeam.data import DataFormatError, load_dataset

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data = dataset_dir(args)
    ds = load_dataset(data, splits=tuple(splits))
    for name in splits:
        if not ds.split(name):
            raise DataFormatError(f"{data / (name + '.csv')}: the split has no rows")
    model, tok = load_model_and_tokenizer(args.model)
    trie = build_trie(
        ds,
        tok,
        args.template,
        weighting=args.weighting,
        entropy=args.entropy,
        catalog=args.catalog,
        smoothing=args.smoothing,
    )
    return ds, model, tok, trie
