"""The recommendation pipeline shared by the CLI and the demo: data, trie, decoding, evaluation.

Decoding calls :func:`igdbeam.generate` and training :func:`igdbeam.trainer.make_compute_loss_func`;
both are imported lazily, so this module works with any igdbeam build that provides them.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from igdbeam.data.bigrec_csv import Dataset, Sample
from igdbeam.prompts import IGNORE_INDEX, build_example, get_template, trie_for_catalog
from igdbeam.recommending import (  # noqa: F401 - re-exported: the pipeline's public names
    GenerateFn,
    Recommendations,
    dist_state,
    encode_prompts,
    left_pad,
    recommend,
    recommend_many,
    recommend_many_sharded,
    recommend_sharded,
    resolve_decoder,
)

LOSSES = ("plain", "pos", "cft", "igd")
METHODS: dict[str, dict[str, float]] = {
    # name: decoding settings (spec section 4); "igd" gets its alpha from the caller.
    "bigrec": {"alpha": 0.0, "length_penalty": 1.0},
    "d3": {"alpha": 0.0, "length_penalty": 0.0},
    "igd": {"alpha": 0.2, "length_penalty": 0.0},
}


def prepare_movielens(
    name: str = "ml-100k",
    out_dir: str | Path | None = None,
    *,
    max_history: int = 10,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Return a folder with the BIGRec-format splits of MovieLens, building it on first use.

    The default folder is ``<cache>/data/<name>-h<max_history>-v2``; the RecBole files come from the
    pinned wheels (:func:`igdbeam.assets.asset_path`).
    """
    from igdbeam.assets import asset_path, cache_dir
    from igdbeam.data.movielens import build_movielens

    default = cache_dir() / "data" / f"{name}-h{max_history}-v2"
    out = Path(out_dir) if out_dir is not None else default
    if (out / "test.csv").is_file() and not overwrite:
        return out
    build_movielens(
        asset_path(name),
        out,
        name=name,
        max_history=max_history,
        overwrite=True,
        progress=progress,
    )
    return out


def target_positions(dataset: Dataset, samples: Sequence[Sample]) -> np.ndarray:
    """Catalog positions (trie item ids) of the samples' targets."""
    return np.asarray([dataset.catalog.position(s.item_id) for s in samples], dtype=np.int64)


def popularity(dataset: Dataset) -> np.ndarray:
    """How often each catalog item is a target in the training split (the paper's ``w_i``).

    Uses the loaded training split, or reads only the ``item_id`` column of ``train.csv``.
    """
    from igdbeam.data.bigrec_csv import read_target_ids
    from igdbeam.trie import popularity_weights

    if "train" in dataset.splits or dataset.directory is None:
        positions = target_positions(dataset, dataset.split("train"))
    else:
        ids = read_target_ids(dataset.directory / "train.csv")
        positions = np.asarray([dataset.catalog.position(i) for i in ids], dtype=np.int64)
    return popularity_weights(positions, len(dataset.catalog))


def build_trie(
    dataset: Dataset,
    tokenizer: Any,
    template: str = "igd",
    *,
    weighting: str = "popularity",
    entropy: str = "global",
) -> Any:
    """Build the catalog trie with popularity (training-target counts + 1) or uniform weights.

    Popularity is smoothed by 1 so that items never seen as a training target keep a weight.
    """
    if weighting not in ("popularity", "uniform"):
        raise ValueError(f"weighting must be 'popularity' or 'uniform', got {weighting!r}")
    weights = popularity(dataset) + 1.0 if weighting == "popularity" else None
    return trie_for_catalog(
        dataset.catalog.titles, tokenizer, template, weights=weights, entropy=entropy
    )


def select_test_users(
    samples: Sequence[Sample], num_users: int | None, seed: int = 0
) -> list[Sample]:
    """One test row per user (the user's last one), then a seeded sample of ``num_users`` users.

    The users come in a seeded random order, so every prefix of the result is a random sample
    too. ``num_users=None`` keeps every row of the split in file order (the full evaluation).
    """
    if num_users is None:
        return list(samples)
    last: dict[str, Sample] = {}
    for s in samples:
        last[s.user_id] = s
    rng = np.random.default_rng(seed)
    users = [str(u) for u in rng.permutation(sorted(last))[:num_users]]
    return [last[u] for u in users]


def select_test_rows(samples: Sequence[Sample], num_rows: int, seed: int = 0) -> list[Sample]:
    """A seeded sample of ``num_rows`` test rows (a user's next item each), users spread first.

    The order is: every user's last row (users in seeded random order, as
    :func:`select_test_users`), then all other rows in seeded random order. So every prefix is a
    random sample: of distinct users while it is no longer than the number of users (a
    time-based split leaves few users in the test split: 166 in MovieLens-100k), then of test
    rows, as the papers' full evaluation counts them.
    """
    users = select_test_users(samples, len(samples), seed)  # every user's last row
    first = {id(s) for s in users}
    rest = [s for s in samples if id(s) not in first]
    order = np.random.default_rng(seed + 1).permutation(len(rest))
    return (users + [rest[i] for i in order])[: max(0, int(num_rows))]


def recommendations_table(
    dataset: Dataset, samples: Sequence[Sample], recs: Recommendations, top: int = 10
) -> list[dict[str, Any]]:
    """Rows for a CSV: user, target, and the top-``top`` titles / item ids / scores."""
    titles = dataset.catalog.titles
    ids = dataset.catalog.ids
    rows = []
    for s, items, scores in zip(samples, recs.item_ids, recs.scores, strict=True):
        for rank, (item, score) in enumerate(zip(items[:top], scores[:top], strict=True)):
            if item < 0:
                continue
            rows.append(
                {
                    "user_id": s.user_id,
                    "rank": rank + 1,
                    "item_id": ids[int(item)],
                    "item_title": titles[int(item)],
                    "score": float(score),
                    "target_item_id": s.item_id,
                    "hit": int(ids[int(item)] == s.item_id),
                }
            )
    return rows


# ---------------------------------------------------------------------------------- training
class ExampleDataset(torch.utils.data.Dataset):
    """Tokenized training examples built with :func:`build_example`.

    Each item holds ``input_ids`` and ``labels`` (for :func:`pad_collate`) and the same tokens
    split as ``prompt_ids`` / ``completion_ids`` plus the history-free ``cf_prompt_ids`` (for
    ``igdbeam.CompletionCollator`` / ``igdbeam.CFTCollator``).
    """

    def __init__(
        self,
        tokenizer: Any,
        samples: Sequence[Sample],
        template: str = "igd",
        max_prompt_tokens: int = 512,
        max_history_items: int | None = None,
        progress: bool = True,
    ) -> None:
        """Tokenize every sample once (the labels are the target's trie path)."""
        self.examples = []
        cf_prompt = list(
            tokenizer(get_template(template).history_free_prompt(), add_special_tokens=False)[
                "input_ids"
            ]
        )
        for s in tqdm(samples, desc="tokenizing examples", disable=not progress, unit="row"):
            hist = list(s.history_item_title)
            if max_history_items is not None:
                hist = hist[-max_history_items:]
            ids, labels = build_example(
                tokenizer,
                hist,
                s.item_title,
                template,
                max_prompt_tokens=max_prompt_tokens,
            )
            n_prompt = sum(1 for x in labels if x == IGNORE_INDEX)
            self.examples.append(
                {
                    "input_ids": ids,
                    "labels": labels,
                    "prompt_ids": ids[:n_prompt],
                    "completion_ids": ids[n_prompt:],
                    "cf_prompt_ids": cf_prompt,
                }
            )

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.examples[i]


def pad_collate(pad_id: int) -> Callable[[list[dict[str, list[int]]]], dict[str, torch.Tensor]]:
    """A collator that right-pads ``input_ids`` (pad id), ``labels`` (-100) and builds the mask."""

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), int(pad_id), dtype=torch.int64)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.int64)
        mask = torch.zeros((len(batch), width), dtype=torch.int64)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return collate


TRAINER_LOSS = {"plain": "ce", "pos": "pos", "cft": "cft", "igd": "igd"}


def make_loss(trie: Any, loss: str, beta: float) -> Callable[..., torch.Tensor]:
    """The Trainer ``compute_loss_func`` for a loss name: plain, pos, cft or igd.

    Calls ``igdbeam.trainer.make_compute_loss_func(trie, beta, loss=...)`` with the trainer's
    names (``plain`` is its ``"ce"``); a build whose function has no ``loss`` argument offers
    ``plain`` (``beta = 1``) and ``igd`` only.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    from igdbeam.trainer import make_compute_loss_func

    if "loss" in inspect.signature(make_compute_loss_func).parameters:
        return make_compute_loss_func(trie, beta, loss=TRAINER_LOSS[loss])
    if loss in ("plain", "igd"):
        return make_compute_loss_func(trie, 1.0 if loss == "plain" else beta)
    raise NotImplementedError(
        f"loss {loss!r} needs igdbeam.trainer.make_compute_loss_func to accept a loss mode; this "
        "build only offers the IG weighting (use --loss plain or --loss igd)"
    )


def _igd_trainer() -> tuple[Any, Any, Any] | None:
    """``(IGDTrainer, CompletionCollator, CFTCollator)`` when this igdbeam build has them."""
    try:
        from igdbeam.collators import CFTCollator, CompletionCollator
        from igdbeam.trainer import IGDTrainer
    except ImportError:
        return None
    return IGDTrainer, CompletionCollator, CFTCollator


def train_model(
    model: Any,
    tokenizer: Any,
    trie: Any,
    samples: Sequence[Sample],
    output_dir: str | Path,
    *,
    loss: str = "igd",
    beta: float = 0.1,
    template: str = "igd",
    epochs: float = 1.0,
    max_steps: int = -1,
    learning_rate: float = 1e-4,
    batch_size: int = 4,
    grad_accum: int = 1,
    max_prompt_tokens: int = 512,
    max_history_items: int | None = None,
    seed: int = 0,
    progress: bool = True,
    save: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``model`` on the samples with a transformers ``Trainer`` and the chosen loss.

    With ``igdbeam.trainer.IGDTrainer`` available it trains with it (``loss`` plain/pos/cft/igd
    map to its ``ce``/``pos``/``cft``/``igd``; CFT gets ``igdbeam.CFTCollator`` with the
    history-free prompt); otherwise a plain ``Trainer`` with :func:`make_loss`. The Trainer
    runs data-parallel when started with ``accelerate launch``. With ``save`` the
    model and tokenizer are written to ``output_dir`` (``save_model`` writes to a temp folder
    first only on the main process, so readers never see a half checkpoint).

    Returns:
        the Trainer's training metrics plus ``seconds``.
    """
    from transformers import Trainer, TrainingArguments

    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    data = ExampleDataset(
        tokenizer, samples, template, max_prompt_tokens, max_history_items, progress
    )
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        seed=seed,
        disable_tqdm=not progress,
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
    )
    igd = _igd_trainer()
    if igd is not None:
        igd_trainer, completion_collator, cft_collator = igd
        collator = (cft_collator if loss == "cft" else completion_collator)(pad_id)
        trainer = igd_trainer(
            model=model,
            args=args,
            train_dataset=data,
            data_collator=collator,
            trie=trie,
            beta=beta,
            loss=TRAINER_LOSS[loss],
        )
    else:
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=data,
            data_collator=pad_collate(pad_id),
            compute_loss_func=make_loss(trie, loss, beta),
        )
    start = time.perf_counter()
    result = trainer.train()
    metrics = dict(result.metrics)
    metrics["seconds"] = time.perf_counter() - start
    if save:
        import shutil

        out = Path(output_dir)
        if trainer.is_world_process_zero():
            tmp = out.parent / f".{out.name}.saving"
            shutil.rmtree(tmp, ignore_errors=True)
            trainer.save_model(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            final = out / "model"
            shutil.rmtree(final, ignore_errors=True)
            out.mkdir(parents=True, exist_ok=True)
            tmp.rename(final)
        trainer.accelerator.wait_for_everyone()
        metrics["model_dir"] = str(Path(output_dir) / "model")
    return metrics
