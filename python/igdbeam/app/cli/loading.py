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


def exclude_history(args: argparse.Namespace) -> bool:
    """``--exclude-history`` / ``--include-history``, or the data's default: on for MovieLens
    (``--dataset``, or a ``--data`` folder written by ``igdbeam prepare``), off otherwise."""
    if args.exclude_history is not None:
        return bool(args.exclude_history)
    if getattr(args, "data", None) is None:
        return True
    from igdbeam.io import read_marker

    marker = read_marker(args.data)
    return marker is not None and marker.get("command") == "prepare"


def all_splits(args: argparse.Namespace, ds: Any) -> Any:
    """The dataset with every split file of ``--data`` / ``--dataset`` loaded (``ds`` itself when
    it has them all): a user's whole prior history spans the splits."""
    from igdbeam.data import load_dataset

    folder = Path(ds.directory) if getattr(ds, "directory", None) else dataset_dir(args)
    names = tuple(n for n in ("train", "valid", "test") if (folder / f"{n}.csv").is_file())
    if set(names) <= set(ds.splits):
        return ds
    return load_dataset(folder, splits=names)


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


def setup(
    args: argparse.Namespace, splits: Sequence[str], *, dtype: str | None = None
) -> tuple[Any, Any, Any, Any]:
    """Load the dataset (each of ``splits`` must have rows), the model (in ``dtype``, default
    ``--dtype``) and its tokenizer, and build the trie: ``(dataset, model, tokenizer, trie)``."""
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
    model, tok = load_model_and_tokenizer(args.model, dtype=dtype or args.dtype)
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
