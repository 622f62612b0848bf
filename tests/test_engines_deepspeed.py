"""DeepSpeed ZeRO-2 and ZeRO-3 train to the 1-process result (2 CPU processes, gloo).

Launched the way users launch: ``accelerate launch --config_file
examples/configs/accelerate_deepspeed_zero{2,3}.yaml`` (the shipped configs; the Trainer's own
SGD optimizer, ``zero_allow_untested_optimizer``; ZeRO-3 saves whole weights through
``stage3_gather_16bit_weights_on_model_save``). Each configuration below trains 12 rows (3
optimizer steps of 4 rows) on 2 processes, per-device batch 2 or batch 1 with 2 accumulation
steps; the weights ``trainer.save_model`` wrote must equal, to 1e-5, those of one process with
batches of 4 (``factories.training.reference_weights``), for IGDTrainer (full and LoRA),
IGDSFTTrainer (TRL's fused head and the logits path) and a stock Trainer with
``make_compute_loss_func``. Every run also proves that DeepSpeed ran it: a ``DeepSpeedEngine`` at
the asked ZeRO stage with its ZeRO optimizer and accumulation steps, ZeRO-3 parameters
partitioned. Needs ``deepspeed`` (``tools/ci_engines.sh`` installs the pinned version); it builds
a shared-memory op with g++/ninja on its first launch (about 40 s, cached).

Run as a script (under ``accelerate launch``) this module is the worker.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from factories.cli import ROOT
from factories.training import (
    PARITY_CONFIGS,
    PARITY_ROWS,
    assert_parity,
    launch_parity_workers,
    parity_worker,
    reference_kinds,
    reference_weights,
    saved_weights,
)

if importlib.util.find_spec("deepspeed") is None:
    pytest.skip("deepspeed is not installed (tools/ci_engines.sh)", allow_module_level=True)

ROWS = PARITY_ROWS
CONFIGS = PARITY_CONFIGS


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The 1-process weights of every trainer kind of CONFIGS."""
    for module in ("accelerate", "trl", "peft", "datasets"):
        pytest.importorskip(module)
    base = tmp_path_factory.mktemp("reference")
    return {kind: reference_weights(kind, base, ROWS) for kind in reference_kinds(CONFIGS)}


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_zero_equals_one_process(stage: int, tmp_path: Path, references: dict) -> None:
    config = ROOT / "examples" / "configs" / f"accelerate_deepspeed_zero{stage}.yaml"
    out = tmp_path / f"zero{stage}"
    launch_parity_workers(Path(__file__).resolve(), config, out)

    for name, (kind, _, accumulation, _) in CONFIGS.items():
        for rank in (0, 1):
            facts = json.loads((out / f"facts-{name}-rank{rank}.json").read_text())
            assert facts["distributed_type"] == "DEEPSPEED", (name, facts)
            assert facts["deepspeed_engine"] and facts["zero_stage"] == stage, (name, facts)
            assert facts["num_processes"] == 2 and facts["global_step"] == ROWS // 4, facts
            assert facts["gradient_accumulation_steps"] == accumulation, (name, facts)
            if stage == 3:
                assert facts["zero_optimizer"] == "DeepSpeedZeroOptimizer_Stage3", facts
                assert facts["zero3_partitioned"] > 0, (name, facts)
            else:
                assert facts["zero_optimizer"] == "DeepSpeedZeroOptimizer", facts
                assert facts["zero3_partitioned"] == 0, (name, facts)
            if kind.startswith("sft"):
                # TRL 1.16 gathers the ZeRO-3 LM head around its fused kernel
                assert facts["fused_head"] is (kind == "sft"), (name, facts)
        assert_parity(saved_weights(out / name), references, kind, f"zero{stage} {name}")


if __name__ == "__main__":
    parity_worker(Path(sys.argv[1]), CONFIGS, ROWS)
