"""A classical sequential recommender on the same rows as the LLM: SASRec from RecTools.

SASRec (Kang & McAuley, 2018) is the self-attentive next-item model every sequential
recommendation paper compares against; this module uses the implementation of the RecTools
library (``pip install igdbeam[baselines]``, i.e. ``rectools[torch]==0.19.0``; imported lazily, so
igdbeam does not need it).

Protocol (so the comparison with the LLM is like for like):

* **training data**: the BIGRec-format training split only. Its rows are a user's sliding
  windows (history, next item) in time order, so each user's training sequence is the history of
  their first row followed by the target of every row (:func:`training_sequences`); items are
  catalog positions (igdbeam item ids).
* **scoring**: each test row is its own sequence (its history, oldest first); SASRec ranks the
  candidate items (by default the items the LLM's trie can produce) and the top ``k`` are the
  row's list. With ``exclude`` (one list of items per row, e.g. the row's history, the same lists
  the LLM's decoders were given) those items are never recommended: SASRec ranks ``k`` more items
  than the longest list and the excluded ones are dropped, so any exclusion set is honoured
  exactly (RecTools' ``filter_viewed`` only knows the items of the input sequence).
* **seeded and cached**: training is seeded (``seed_everything`` + a deterministic Trainer on the
  CPU); the lists, the training time and the settings are written to
  ``<cache_dir>/sasrec-<fingerprint>.json`` and read back instead of retraining. The fingerprint
  covers the settings, ``k``, the exclusion, the candidates and the exact training and test rows.
  A cache also records a key per test row (:func:`row_keys`) and one of the model
  (:func:`base_fingerprint`), so a cache of the whole split serves any of its rows (a report
  of the rows an experiment has decoded so far) without RecTools.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from igdbeam.data.bigrec_csv import Catalog, Sample

EXTRA_HINT = 'SASRec needs RecTools: pip install "igdbeam[baselines]"'


@dataclass(frozen=True)
class SASRecSettings:
    """SASRec's hyper-parameters (RecTools ``SASRecModel``) and the training seed.

    The defaults are the usual SASRec settings for MovieLens scaled to ML-100k (64 factors, two
    blocks of two heads, the last 50 items of each sequence, softmax loss over the catalog, Adam
    at 1e-3, batches of 128) and 40 epochs: on 2,000 random rows of ML-100k's validation split
    (history excluded) NDCG@10 was 0.027 after 10 epochs, 0.032 after 20, 0.059 after 40 and
    0.062 after 80 (HR@10 0.059, 0.067, 0.120, 0.125), so 40 epochs is where it levels off, at
    about 9 s an epoch on one busy CPU core.
    """

    epochs: int = 40
    n_factors: int = 64
    n_blocks: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    session_max_len: int = 50
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0


@dataclass
class SASRecResult:
    """SASRec's top-``k`` lists for the test rows and how they were made.

    Attributes:
        item_ids: ``[rows, k]`` catalog positions, best first, ``-1`` for an empty slot.
        train_seconds: wall time of the training (as measured when it was trained).
        recommend_seconds: wall time of scoring the test rows.
        settings: the settings, ``k``, the exclusion and the sizes the lists were made with.
        path: the cache file (None without a cache folder).
        from_cache: True when the lists were read back instead of trained.
        unscored_rows: rows none of whose history items SASRec knows (empty lists).
    """

    item_ids: np.ndarray
    train_seconds: float
    recommend_seconds: float
    settings: dict[str, Any]
    path: Path | None = None
    from_cache: bool = False
    unscored_rows: int = 0
    versions: dict[str, str] = field(default_factory=dict)


def rectools_available() -> bool:
    """True when RecTools with its torch models can be imported."""
    try:
        with _quiet():
            import rectools.models  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the warnings and the INFO lines of RecTools / Lightning while they run."""
    prefixes = ("pytorch_lightning", "lightning", "rectools")
    names = [n for n in logging.root.manager.loggerDict if n.startswith(prefixes)]
    loggers = [logging.getLogger(n) for n in (*prefixes, *names)]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def _row_order(samples: Sequence[Sample]) -> list[int]:
    """Indices of ``samples`` in time order: by the ``timestamp`` column when every row has an
    integer one (stable, so ties keep file order), else file order."""
    try:
        stamps = [int(s.extra["timestamp"]) for s in samples]
    except (KeyError, ValueError):
        return list(range(len(samples)))
    return sorted(range(len(samples)), key=lambda i: stamps[i])


def training_sequences(samples: Sequence[Sample], catalog: Catalog) -> dict[str, list[int]]:
    """Each user's training sequence (catalog positions, oldest first).

    A user's rows are taken in time order (:func:`_row_order`); the sequence is the history of
    the first row followed by the target of every row. For sliding-window rows (as the MovieLens
    builder writes them) this is exactly the user's interactions in the split; items missing
    from the catalog are skipped.
    """
    known = set(catalog.ids)
    out: dict[str, list[int]] = {}
    for i in _row_order(samples):
        s = samples[i]
        seq = out.get(s.user_id)
        if seq is None:
            seq = out[s.user_id] = [catalog.position(h) for h in s.history_item_id if h in known]
        if s.item_id in known:
            seq.append(catalog.position(s.item_id))
    return out


def _digest(samples: Sequence[Sample]) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps([s.user_id, list(s.history_item_id), s.item_id]).encode())
    return h.hexdigest()


def fingerprint(
    train: Sequence[Sample],
    test: Sequence[Sample],
    *,
    k: int,
    exclude: Sequence[Sequence[int]] | None,
    candidates: np.ndarray | None,
    settings: SASRecSettings,
) -> str:
    """A 16-hex-digit key of everything the lists depend on (the cache file's name)."""
    key = {
        "settings": asdict(settings),
        "k": int(k),
        "exclude": None if exclude is None else [sorted(int(i) for i in e) for e in exclude],
        "candidates": None if candidates is None else [int(i) for i in candidates],
        "train": _digest(train),
        "test": _digest(test),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def base_fingerprint(
    train: Sequence[Sample],
    *,
    k: int,
    exclude_given: bool,
    candidates: np.ndarray | None,
    settings: SASRecSettings,
) -> str:
    """A key of what every row's list depends on besides the row itself (the model, ``k``, the
    candidates and whether rows exclude items): two caches with the same key hold the same list
    for the same :func:`row_keys`."""
    key = {
        "settings": asdict(settings),
        "k": int(k),
        "exclude_given": bool(exclude_given),
        "candidates": None if candidates is None else [int(i) for i in candidates],
        "train": _digest(train),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def row_keys(test: Sequence[Sample], exclude: Sequence[Sequence[int]] | None) -> list[str]:
    """Per test row, a key of what its list depends on: user, history, target, excluded items."""
    out = []
    for r, s in enumerate(test):
        ex = None if exclude is None else sorted(int(i) for i in exclude[r])
        text = json.dumps([s.user_id, list(s.history_item_id), s.item_id, ex])
        out.append(hashlib.sha256(text.encode()).hexdigest()[:16])
    return out


def _result_from_cache(
    path: Path, saved: Mapping[str, Any], item_ids: np.ndarray, unscored_rows: int
) -> SASRecResult:
    return SASRecResult(
        item_ids=item_ids,
        train_seconds=float(saved["train_seconds"]),
        recommend_seconds=float(saved["recommend_seconds"]),
        settings=saved["settings"],
        path=path,
        from_cache=True,
        unscored_rows=unscored_rows,
        versions=saved.get("versions", {}),
    )


def _rows_from_larger_cache(
    cache_dir: Path, base: str, keys: Sequence[str], k: int
) -> SASRecResult | None:
    """The lists of rows ``keys`` cut out of a cache of more rows of the same model (e.g. the
    whole test split cached by ``--baselines-only``, read by a report of the rows decoded so
    far); None when no cache holds them all."""
    for path in sorted(cache_dir.glob("sasrec-*.json")):
        saved = json.loads(path.read_text())
        if saved.get("base_key") != base or "row_keys" not in saved:
            continue
        where = {key: i for i, key in enumerate(saved["row_keys"])}
        if not all(key in where for key in keys):
            continue
        lists = np.asarray(saved["item_ids"], dtype=np.int64).reshape(len(where), k)
        item_ids = lists[[where[key] for key in keys]]
        return _result_from_cache(path, saved, item_ids, int(np.sum(np.all(item_ids < 0, axis=1))))
    return None


def _interactions(sequences: Mapping[str, Sequence[int]]) -> Any:
    """A RecTools interactions frame: one row per (sequence, position); the position is the
    time stamp, so RecTools keeps each sequence's order."""
    import pandas as pd

    users, items, stamps = [], [], []
    for user, seq in sequences.items():
        users += [user] * len(seq)
        items += [int(i) for i in seq]
        stamps += list(range(len(seq)))
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "weight": np.ones(len(items)),
            "datetime": pd.to_datetime(np.asarray(stamps, dtype=np.int64), unit="s"),
        }
    )


def fit_sasrec(sequences: Mapping[str, Sequence[int]], settings: SASRecSettings) -> Any:
    """Train RecTools' SASRec on the given sequences (seeded, on the CPU); return the model."""
    import torch

    with _quiet():  # importing creates Lightning's loggers; the next block silences them
        import pytorch_lightning as pl
        from rectools.dataset import Dataset as RTDataset
        from rectools.models import SASRecModel
        from rectools.models.nn.item_net import IdEmbeddingsItemNet

    with _quiet():

        def trainer() -> Any:
            return pl.Trainer(
                max_epochs=settings.epochs,
                min_epochs=settings.epochs,
                deterministic=True,
                accelerator="cpu",
                devices=1,
                enable_progress_bar=False,
                enable_model_summary=False,
                logger=False,
                enable_checkpointing=False,
            )

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same float reductions on every machine
        pl.seed_everything(settings.seed, workers=True, verbose=False)
        model = SASRecModel(
            n_blocks=settings.n_blocks,
            n_heads=settings.n_heads,
            n_factors=settings.n_factors,
            dropout_rate=settings.dropout,
            session_max_len=settings.session_max_len,
            lr=settings.lr,
            batch_size=settings.batch_size,
            epochs=settings.epochs,
            deterministic=True,
            item_net_block_types=(IdEmbeddingsItemNet,),
            get_trainer_func=trainer,
            recommend_torch_device="cpu",
        )
        try:
            model.fit(RTDataset.construct(_interactions(sequences)))
        finally:
            torch.set_num_threads(threads)
    return model


def recommend_sasrec(
    model: Any,
    histories: Sequence[Sequence[int]],
    *,
    k: int = 10,
    exclude: Sequence[Sequence[int]] | None = None,
    candidates: np.ndarray | Sequence[int] | None = None,
) -> tuple[np.ndarray, int]:
    """Top-``k`` lists of a fitted SASRec for each history (catalog positions, oldest first).

    Args:
        model: a fitted SASRec (:func:`fit_sasrec`).
        histories: per row, its input sequence.
        k: list length.
        exclude: per row, items never to recommend to it (None: none).
        candidates: the items that may be recommended (None: every item the model knows).

    Returns:
        ``([rows, k] item ids, -1 for empty slots; the number of rows left empty because none
        of their history items is known to the model)``.
    """
    with _quiet():
        from rectools.dataset import Dataset as RTDataset

    with _quiet():
        names = [f"row-{r}" for r in range(len(histories))]
        rt = RTDataset.construct(_interactions(dict(zip(names, histories, strict=True))))
        known = set(int(i) for i in model.data_preparator.get_known_item_ids())
        pairs = zip(names, histories, strict=True)
        scored = [n for n, h in pairs if any(int(i) in known for i in h)]
        whitelist = None
        if candidates is not None:
            whitelist = np.asarray([int(i) for i in candidates if int(i) in known], dtype=np.int64)
        if exclude is not None and len(exclude) != len(histories):
            raise ValueError(f"exclude has {len(exclude)} rows for {len(histories)} histories")
        skip = (
            [set()] * len(histories) if exclude is None else [{int(i) for i in e} for e in exclude]
        )
        reco = model.recommend(
            users=scored,
            dataset=rt,
            k=k + max((len(e) for e in skip), default=0),
            filter_viewed=False,
            items_to_recommend=whitelist,
            on_unsupported_targets="ignore",
        )
    out = np.full((len(histories), k), -1, dtype=np.int64)
    row_of = {n: r for r, n in enumerate(names)}
    reco = reco.sort_values(["user_id", "rank"], kind="stable")
    for user, group in reco.groupby("user_id", sort=False):
        r = row_of[str(user)]
        items = [int(i) for i in group["item_id"].to_numpy(dtype=np.int64) if int(i) not in skip[r]]
        out[r, : len(items[:k])] = items[:k]
    return out, len(histories) - len(scored)


def sasrec_recommendations(
    train: Sequence[Sample],
    test: Sequence[Sample],
    catalog: Catalog,
    *,
    k: int = 10,
    exclude: Sequence[Sequence[int]] | None = None,
    candidates: np.ndarray | Sequence[int] | None = None,
    settings: SASRecSettings | None = None,
    cache_dir: str | Path | None = None,
) -> SASRecResult:
    """SASRec trained on ``train`` and scoring every ``test`` row's history; cached.

    Args:
        train: the training split (every row's history + target gives the sequences).
        test: the rows to recommend for (each row's history -> top ``k``).
        catalog: the dataset's catalog (item ids in the files -> catalog positions).
        k: list length.
        exclude: per test row, the items never to recommend to it (catalog positions; e.g. the
            row's history, as the LLM's decoders were given it); None: no exclusion.
        candidates: the items that may be recommended (None: every item SASRec has seen).
        settings: hyper-parameters and seed (None: :class:`SASRecSettings` defaults).
        cache_dir: where ``sasrec-<fingerprint>.json`` is read from / written to (None: no cache).

    Raises:
        ImportError: RecTools is not installed and there is no cached result.
    """
    settings = settings or SASRecSettings()
    cand = None if candidates is None else np.unique(np.asarray(candidates, dtype=np.int64))
    key = fingerprint(train, test, k=k, exclude=exclude, candidates=cand, settings=settings)
    path = None if cache_dir is None else Path(cache_dir) / f"sasrec-{key}.json"
    if path is not None and path.is_file():
        saved = json.loads(path.read_text())
        lists = np.asarray(saved["item_ids"], dtype=np.int64).reshape(len(test), k)
        return _result_from_cache(path, saved, lists, int(saved["unscored_rows"]))
    # Not cached for exactly these rows: a cache of more rows may hold them, and the lists
    # trained now are cached with these keys for later subsets.
    base = base_fingerprint(
        train, k=k, exclude_given=exclude is not None, candidates=cand, settings=settings
    )
    keys = row_keys(test, exclude)
    if cache_dir is not None and Path(cache_dir).is_dir():
        found = _rows_from_larger_cache(Path(cache_dir), base, keys, k)
        if found is not None:
            return found
    if not rectools_available():
        raise ImportError(EXTRA_HINT)
    import rectools
    import torch

    sequences = training_sequences(train, catalog)
    t0 = time.perf_counter()
    model = fit_sasrec(sequences, settings)
    train_seconds = time.perf_counter() - t0
    known = set(catalog.ids)
    histories = [[catalog.position(h) for h in s.history_item_id if h in known] for s in test]
    t0 = time.perf_counter()
    item_ids, unscored = recommend_sasrec(model, histories, k=k, exclude=exclude, candidates=cand)
    result = SASRecResult(
        item_ids=item_ids,
        train_seconds=train_seconds,
        recommend_seconds=time.perf_counter() - t0,
        settings={
            **asdict(settings),
            "k": k,
            "exclude_history": exclude is not None,
            "train_rows": len(train),
            "train_sequences": len(sequences),
            "train_interactions": sum(len(s) for s in sequences.values()),
            "test_rows": len(test),
            "candidates": None if cand is None else int(cand.size),
            "threads": 1,
        },
        path=path,
        unscored_rows=unscored,
        versions={"rectools": rectools.__version__, "torch": torch.__version__},
    )
    if path is not None:
        from igdbeam.io import write_json

        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(
            path,
            {
                "item_ids": item_ids.tolist(),
                "train_seconds": result.train_seconds,
                "recommend_seconds": result.recommend_seconds,
                "settings": result.settings,
                "unscored_rows": unscored,
                "versions": result.versions,
                "base_key": base,
                "row_keys": keys,
            },
        )
    return result
