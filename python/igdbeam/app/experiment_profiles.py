"""The settings of ``igdbeam experiment``: the profile dataclass, the shipped profiles
(``cpu``, ``gpu``, ``tiny``), the decoding grid, run names and the checks before any work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

LOSS_NAMES = ("plain", "pos", "cft", "igd")
METHOD_NAMES = ("bigrec", "d3", "igd")


@dataclass(frozen=True)
class ExperimentProfile:
    """Sizes and settings of one experiment (see ``PROFILES`` for the shipped ones).

    Attributes:
        name: profile name.
        losses: training losses of the grid, in run order (the first is the baseline).
        seeds: training seeds; each (loss, seed) is one fine-tune.
        beta: IGD loss weight of zero-IG tokens (and ``pos``'s weight of the last token).
        alpha: IGD decoding strength of the ``igd`` decoding.
        catalog / smoothing / weighting: the trie (see :func:`igdbeam.app.pipeline.build_trie`).
        max_history_items: history items per prompt (the newest).
        train_rows: the latest N training rows (None: all).
        train_steps: optimizer steps (-1: ``epochs`` epochs over ``train_rows``).
        epochs: epochs when ``train_steps`` is -1.
        early_stopping_patience: with epochs, evaluate and checkpoint at the end of each epoch,
            stop after this many epochs without a lower validation loss and keep the best
            epoch's model (the authors' ``EarlyStoppingCallback``); None: no early stopping.
        batch_size / grad_accum / learning_rate / warmup_steps: the optimizer.
        lora_r / lora_alpha / lora_dropout: LoRA adapter (``lora_r=0``: full fine-tune).
        eval_rows / eval_steps: validation rows for the training curves and how often.
        test_rows: test rows decoded (None: all), sampled with every user's last row first.
        num_beams / decode_batch: beam search size and prompts per batch.
        bootstrap: bootstrap resamples of the intervals.
        decode_chunk: test rows per cached decode chunk.
        exclude_history: never recommend an item of the row's own history.
        dtype: compute precision of training and decoding (``float32`` / ``bfloat16``; the CLI's
            ``auto`` is resolved before it is recorded, so a resumed run keeps its precision).
        checkpoint_steps: Trainer checkpoint every N steps, resumed from after a stop (None:
            no checkpoints; a stopped fine-tune starts again).
        methods: the decodings of the grid, among ``bigrec``, ``d3`` and ``igd``.
    """

    name: str
    losses: tuple[str, ...] = ("plain", "igd", "pos", "cft")
    seeds: tuple[int, ...] = (0,)
    beta: float = 0.1
    alpha: float = 0.2
    catalog: str = "train-targets"
    smoothing: float | None = None
    weighting: str = "popularity"
    template: str = "igd"
    max_history_items: int = 5
    train_rows: int | None = 800
    train_steps: int = 100
    epochs: float = 1.0
    early_stopping_patience: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    learning_rate: float = 5e-4
    warmup_steps: float = 10
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    eval_rows: int = 32
    eval_steps: int = 25
    test_rows: int | None = 200
    num_beams: int = 10
    decode_batch: int = 16
    bootstrap: int = 1000
    decode_chunk: int = 32
    exclude_history: bool = False
    dtype: str = "float32"
    checkpoint_steps: int | None = None
    methods: tuple[str, ...] = ("bigrec", "d3", "igd")
    extra: dict[str, Any] = field(default_factory=dict)


PROFILES: dict[str, ExperimentProfile] = {
    # 2 CPU cores: LoRA r=8 on SmolLM2-135M, 5 history items (~150-token prompts), 100 steps of
    # 8 rows (~10-12 s a step on 2 busy cores), 200 test rows; plain and igd first.
    "cpu": ExperimentProfile("cpu"),
    # 2 CPU cores, sized to see a Games-size effect (see README "Evidence"): every ML-100k test
    # row (9,907 rows, 166 users), history excluded, bfloat16, LoRA r=8 on the whole training
    # split for 1,200 steps of 8 rows (validation loss was still falling steadily at 100 steps
    # in the `cpu` run: 1.49 -> 1.33), checkpoints every 100 steps so that each fine-tune spans
    # sessions; D3 and D3 + IGD decoding (alpha 0.1 as the authors' evaluate.sh) of the plain and
    # IGD losses: the Table 2 ablation.
    "cpu-large": ExperimentProfile(
        "cpu-large",
        losses=("plain", "igd"),
        alpha=0.1,
        train_rows=None,
        train_steps=1200,
        learning_rate=5e-4,
        warmup_steps=20,
        eval_rows=256,
        eval_steps=200,
        test_rows=None,
        decode_chunk=256,
        exclude_history=True,
        dtype="bfloat16",
        checkpoint_steps=100,
        methods=("d3", "igd"),
    ),
    # A lent GPU (H100/H200), the authors' training scripts (cl_monitor.py / evaluate.sh): full
    # fine-tune in bfloat16, lr 1e-4, 128 rows a step (16 x 8 accumulated), 20 warm-up steps,
    # up to 3 epochs with validation and a checkpoint each epoch, early stopping with patience 2
    # and the best epoch kept, 10 beams, alpha 0.1, history excluded (MovieLens). Deviations,
    # each argued in README "Evidence": SmolLM2-135M instead of Qwen2.5-1.5B (the registry has
    # no Qwen weights); float32 master weights under bf16 autocast (the authors keep the
    # weights themselves in bf16, which rounds small updates away); 5 history items, as the
    # cpu profiles; validation on 2,048 rows (the authors use the whole split).
    "gpu": ExperimentProfile(
        "gpu",
        losses=("plain", "igd"),
        alpha=0.1,
        train_rows=None,
        train_steps=-1,
        epochs=3.0,
        early_stopping_patience=2,
        batch_size=16,
        grad_accum=8,
        learning_rate=1e-4,
        warmup_steps=20,
        lora_r=0,
        eval_rows=2048,
        eval_steps=200,
        test_rows=None,
        decode_batch=64,
        decode_chunk=1024,
        exclude_history=True,
        dtype="bfloat16",
    ),
    # CI: a tiny random model and dataset, a few steps, end to end.
    "tiny": ExperimentProfile(
        "tiny",
        seeds=(0,),
        train_rows=None,
        train_steps=4,
        batch_size=4,
        learning_rate=1e-3,
        warmup_steps=0,
        lora_r=4,
        eval_rows=8,
        eval_steps=2,
        test_rows=None,
        num_beams=4,
        decode_batch=8,
        bootstrap=200,
        decode_chunk=8,
    ),
}


# The profile fields a fine-tune depends on. An experiment that reuses another one's fine-tunes
# (``models_from``) must agree with it on these; it may differ in the rest (the decoding, the
# test rows, the precision it decodes in).
TRAINING_FIELDS = (
    "beta",
    "catalog",
    "smoothing",
    "weighting",
    "template",
    "max_history_items",
    "train_rows",
    "train_steps",
    "epochs",
    "early_stopping_patience",
    "batch_size",
    "grad_accum",
    "learning_rate",
    "warmup_steps",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "eval_rows",
    "eval_steps",
)


def run_name(loss: str, seed: int, beta: float) -> str:
    """The folder name of one fine-tune (``igd-b0.1-s0``, ``plain-s0``)."""
    return f"{loss}-b{beta:g}-s{seed}" if loss in ("igd", "pos") else f"{loss}-s{seed}"


def decodings(profile: ExperimentProfile) -> dict[str, dict[str, float]]:
    """The decoding grid: BIGRec (lp 1), D3 (lp 0) and D3 + IGD (alpha), as the profile's
    ``methods`` select them."""
    grid = {
        "bigrec": {"alpha": 0.0, "length_penalty": 1.0},
        "d3": {"alpha": 0.0, "length_penalty": 0.0},
        "igd": {"alpha": profile.alpha, "length_penalty": 0.0},
    }
    return {m: grid[m] for m in profile.methods}


def check_profile(profile: ExperimentProfile) -> None:
    """Raise ValueError on settings that cannot run (before any work starts)."""
    bad = [x for x in profile.losses if x not in LOSS_NAMES]
    if bad or not profile.losses:
        raise ValueError(f"losses must be among {', '.join(LOSS_NAMES)}, got {profile.losses}")
    if not profile.seeds:
        raise ValueError("at least one seed is needed")
    for name in ("beta", "alpha", "lora_dropout"):
        v = getattr(profile, name)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    positive = ("batch_size", "grad_accum", "num_beams", "decode_batch", "eval_steps", "bootstrap")
    for name in positive + ("decode_chunk", "max_history_items"):
        if int(getattr(profile, name)) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(profile, name)}")
    for name in ("train_rows", "test_rows"):
        v = getattr(profile, name)
        if v is not None and v <= 0:
            raise ValueError(f"{name} must be positive (or None for all), got {v}")
    if profile.train_steps == 0 or profile.train_steps < -1:
        raise ValueError(f"train_steps must be positive or -1, got {profile.train_steps}")
    if not profile.methods or any(m not in METHOD_NAMES for m in profile.methods):
        raise ValueError(f"methods must be among {', '.join(METHOD_NAMES)}, got {profile.methods}")
    if profile.early_stopping_patience is not None and (
        profile.early_stopping_patience <= 0 or profile.train_steps != -1
    ):
        raise ValueError("early_stopping_patience must be positive and needs train_steps=-1")
    if not profile.epochs > 0:
        raise ValueError(f"epochs must be positive, got {profile.epochs}")
    if profile.dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be float32 or bfloat16, got {profile.dtype!r}")
    if profile.checkpoint_steps is not None and profile.checkpoint_steps <= 0:
        raise ValueError(
            f"checkpoint_steps must be positive or None, got {profile.checkpoint_steps}"
        )
    if not profile.learning_rate > 0 or profile.lora_r < 0:
        raise ValueError("learning_rate must be > 0 and lora_r >= 0")


def seeds_of(names: Sequence[str]) -> list[int]:
    """The seeds present in a list of run names."""
    return sorted({int(n.rsplit("-s", 1)[1]) for n in names})
