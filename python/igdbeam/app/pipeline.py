"""The recommendation pipeline shared by the CLI and the demo: data, trie, decoding, evaluation.

Decoding calls :func:`igdbeam.generate` and training :func:`igdbeam.training.trainer.make_compute_loss_func`;
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

from igdbeam.app.recommending import (  # noqa: F401 - re-exported: the pipeline's public names
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
from igdbeam.data.bigrec_csv import Dataset, Sample
from igdbeam.training.prompts import IGNORE_INDEX, build_example, get_template, trie_for_catalog

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
    pinned wheels (:func:`igdbeam.app.assets.asset_path`).
    """
    from igdbeam.app.assets import asset_path, cache_dir
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
    from igdbeam.trie.item_trie import popularity_weights

    if "train" in dataset.splits or dataset.directory is None:
        positions = target_positions(dataset, dataset.split("train"))
    else:
        ids = read_target_ids(dataset.directory / "train.csv")
        positions = np.asarray([dataset.catalog.position(i) for i in ids], dtype=np.int64)
    return popularity_weights(positions, len(dataset.catalog))


CATALOG_SCOPES = ("all", "train-targets")


def item_weights(
    dataset: Dataset,
    weighting: str = "popularity",
    *,
    catalog: str = "all",
    smoothing: float | None = None,
) -> np.ndarray | None:
    """Item weights ``w_i`` of the trie's entropy (spec section 1), one per catalog item.

    ``popularity``: how often the item is a training target, plus ``smoothing``. The default
    smoothing (None) is 1 for the whole catalog (so that never-seen items keep a weight: with
    weight 0 their edges would carry the largest IG and IGD decoding would favour them) and 0
    for ``catalog="train-targets"``, the paper's raw counts. ``uniform`` returns None.
    """
    if weighting not in ("popularity", "uniform"):
        raise ValueError(f"weighting must be 'popularity' or 'uniform', got {weighting!r}")
    if catalog not in CATALOG_SCOPES:
        raise ValueError(f"catalog must be one of {', '.join(CATALOG_SCOPES)}, got {catalog!r}")
    if weighting == "uniform":
        return None
    if smoothing is None:
        smoothing = 1.0 if catalog == "all" else 0.0
    smoothing = float(smoothing)
    if not np.isfinite(smoothing) or smoothing < 0:
        raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing!r}")
    return popularity(dataset) + smoothing


def catalog_items(dataset: Dataset, catalog: str = "all") -> np.ndarray:
    """Catalog positions of the items a trie of this scope holds (sorted).

    ``all``: every catalog item; ``train-targets``: the items that are the target of at least
    one training row (the public reference code's scope: nothing else can be recommended).
    """
    if catalog not in CATALOG_SCOPES:
        raise ValueError(f"catalog must be one of {', '.join(CATALOG_SCOPES)}, got {catalog!r}")
    if catalog == "all":
        return np.arange(len(dataset.catalog), dtype=np.int64)
    kept = np.nonzero(popularity(dataset) > 0)[0].astype(np.int64)
    if kept.size == 0:
        raise ValueError("catalog='train-targets' needs at least one training row")
    return kept


def with_catalog_ids(trie: Any, item_ids: np.ndarray, num_items: int) -> Any:
    """The same trie with its items renamed: trie item ``k`` becomes catalog item ``item_ids[k]``.

    Catalog items not in ``item_ids`` get ``item_leaf == -1``: they have no path, so decoding
    never returns them and a test row whose target is one of them is a miss.
    """
    from igdbeam.trie.item_trie import ItemTrie

    ids = np.asarray(item_ids, dtype=np.int64)
    if ids.shape != (trie.num_items,) or (ids.size and (ids.min() < 0 or ids.max() >= num_items)):
        raise ValueError(f"item_ids must hold {trie.num_items} catalog ids in [0, {num_items})")
    arrays = trie.arrays()
    leaf_items = arrays["leaf_items"].cpu().numpy().astype(np.int64)
    arrays["leaf_items"] = torch.from_numpy(ids[leaf_items].astype(np.int32))
    item_leaf = np.full(num_items, -1, dtype=np.int32)
    item_leaf[ids] = arrays["item_leaf"].cpu().numpy()
    arrays["item_leaf"] = torch.from_numpy(item_leaf)
    return ItemTrie(arrays, {**trie.meta, "num_items": int(num_items)})


def build_trie(
    dataset: Dataset,
    tokenizer: Any,
    template: str = "igd",
    *,
    weighting: str = "popularity",
    entropy: str = "global",
    catalog: str = "all",
    smoothing: float | None = None,
) -> Any:
    """Build the item trie of a dataset; trie item ids are catalog positions in both scopes.

    Args:
        dataset: the loaded dataset (its training split, or ``train.csv``, gives popularity).
        tokenizer / template: how titles are tokenized (in the template's context).
        weighting: ``popularity`` (training-target counts + ``smoothing``) or ``uniform``.
        entropy: ``global`` (reference default) or ``conditional``.
        catalog: ``all`` (every catalog item can be recommended) or ``train-targets`` (the
            reference code's trie: only items seen as a training target).
        smoothing: added to every popularity count; None: 1 for ``all``, 0 (raw counts, the
            paper's setting) for ``train-targets`` (see :func:`item_weights`).
    """
    weights = item_weights(dataset, weighting, catalog=catalog, smoothing=smoothing)
    keep = catalog_items(dataset, catalog)
    titles = dataset.catalog.titles
    if catalog == "all":
        return trie_for_catalog(titles, tokenizer, template, weights=weights, entropy=entropy)
    trie = trie_for_catalog(
        [titles[int(i)] for i in keep],
        tokenizer,
        template,
        weights=None if weights is None else weights[keep],
        entropy=entropy,
    )
    return with_catalog_ids(trie, keep, len(dataset.catalog))


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

    Calls ``igdbeam.training.trainer.make_compute_loss_func(trie, beta, loss=...)`` with the trainer's
    names (``plain`` is its ``"ce"``); a build whose function has no ``loss`` argument offers
    ``plain`` (``beta = 1``) and ``igd`` only.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    from igdbeam.training.trainer import make_compute_loss_func

    if "loss" in inspect.signature(make_compute_loss_func).parameters:
        return make_compute_loss_func(trie, beta, loss=TRAINER_LOSS[loss])
    if loss in ("plain", "igd"):
        return make_compute_loss_func(trie, 1.0 if loss == "plain" else beta)
    raise NotImplementedError(
        f"loss {loss!r} needs igdbeam.training.trainer.make_compute_loss_func to accept a loss mode; this "
        "build only offers the IG weighting (use --loss plain or --loss igd)"
    )


def _igd_trainer() -> tuple[Any, Any, Any] | None:
    """``(IGDTrainer, CompletionCollator, CFTCollator)`` when this igdbeam build has them."""
    try:
        from igdbeam.training.collators import CFTCollator, CompletionCollator
        from igdbeam.training.trainer import IGDTrainer
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
    lora: Any = None,
    eval_samples: Sequence[Sample] | None = None,
    eval_steps: int | None = None,
    warmup_steps: float = 0,
) -> dict[str, Any]:
    """Fine-tune ``model`` on the samples with a transformers ``Trainer`` and the chosen loss.

    With ``igdbeam.training.trainer.IGDTrainer`` available it trains with it (``loss`` plain/pos/cft/igd
    map to its ``ce``/``pos``/``cft``/``igd``; CFT gets ``igdbeam.CFTCollator`` with the
    history-free prompt); otherwise a plain ``Trainer`` with :func:`make_loss`. The Trainer
    runs data-parallel when started with ``accelerate launch``. With ``save`` the
    model and tokenizer are written to ``output_dir`` (``save_model`` writes to a temp folder
    first only on the main process, so readers never see a half checkpoint).

    With ``lora`` (a ``peft.LoraConfig``, e.g. :func:`igdbeam.training.lora.lora_config`) the model is
    wrapped with ``peft.get_peft_model`` and only the adapter is trained and saved (a few MB).
    With ``eval_samples`` the Trainer evaluates on them every ``eval_steps`` steps (and at
    the end), logging ``eval_loss_zero_ig`` / ``eval_loss_pos_ig``: the training curves.

    Returns:
        the Trainer's training metrics plus ``seconds`` and ``log_history`` (every logged
        training and evaluation record).
    """
    from transformers import Trainer, TrainingArguments

    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    data = ExampleDataset(
        tokenizer, samples, template, max_prompt_tokens, max_history_items, progress
    )
    eval_data = None
    if eval_samples:
        eval_data = ExampleDataset(
            tokenizer, eval_samples, template, max_prompt_tokens, max_history_items, False
        )
    if lora is not None:
        import peft

        model = peft.get_peft_model(model, lora)
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
        logging_steps=min(10, eval_steps) if eval_steps else 10,
        eval_strategy="steps" if eval_data is not None else "no",
        eval_steps=eval_steps if eval_data is not None else None,
        per_device_eval_batch_size=batch_size,
        warmup_steps=warmup_steps,
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
            eval_dataset=eval_data,
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
    history: list[dict[str, Any]] = []
    if eval_data is not None:
        # The curves' first point, the model before training (train() starts a new log).
        history.append({**trainer.evaluate(), "step": 0})
    result = trainer.train()
    if eval_data is not None and trainer.state.global_step % (eval_steps or 1) != 0:
        trainer.evaluate()
    metrics = dict(result.metrics)
    metrics["seconds"] = time.perf_counter() - start
    metrics["log_history"] = history + list(trainer.state.log_history)
    if save:
        from igdbeam.app.io_utils import atomic_dir, ensure_output_dir

        out = Path(output_dir)
        if trainer.is_world_process_zero():
            ensure_output_dir(out, "train")  # a new or empty folder gets igdbeam's marker
            # Saved into a unique temp folder inside ``out`` (concurrent runs never share one),
            # fsynced and renamed to ``out/model``; an earlier model is replaced only then.
            with atomic_dir(
                out / "model", command="train", overwrite=True, require_marker=False
            ) as tmp:
                trainer.save_model(str(tmp))
                tokenizer.save_pretrained(str(tmp))
        trainer.accelerator.wait_for_everyone()
        metrics["model_dir"] = str(Path(output_dir) / "model")
    return metrics
