"""FSDP2 (``fully_shard``) trains to the 1-process result (2 CPU processes, gloo).

Launched the way users launch: ``accelerate launch --config_file
examples/configs/accelerate_fsdp2.yaml`` (the shipped config). accelerate enables FSDP only for
GPU-type processes: on CPU an FSDP configuration silently trains with DDP (accelerate/state.py).
The worker therefore calls ``factories.training.force_fsdp_on_cpu`` first, which makes a CPU
state with an FSDP plugin take accelerate's FSDP branch; all the rest (``fully_shard`` per
decoder layer and at the root, the Trainer's FSDP paths, the full state dict on save) is
accelerate's and transformers' own, and every run asserts that the parameters really are
sharded DTensors. Same configurations, rows and 1e-5 comparison as
``test_engines_deepspeed.py``; IGDSFTTrainer must use TRL's fused LM head (TRL 1.16 gathers a
DTensor head itself) and match.

Run as a script (under ``accelerate launch``) this module is the worker.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from factories.cli import ROOT
from factories.training import (
    PARITY_CONFIGS,
    PARITY_ROWS,
    assert_parity,
    force_fsdp_on_cpu,
    launch_parity_workers,
    parity_worker,
    reference_kinds,
    reference_weights,
    saved_weights,
)

ROWS = PARITY_ROWS
CONFIGS = PARITY_CONFIGS


@pytest.mark.slow
def test_fsdp2_equals_one_process(tmp_path: Path) -> None:
    for module in ("accelerate", "trl", "peft", "datasets"):
        pytest.importorskip(module)
    config = ROOT / "examples" / "configs" / "accelerate_fsdp2.yaml"
    out = tmp_path / "fsdp2"
    launch_parity_workers(Path(__file__).resolve(), config, out)

    base = tmp_path / "reference"
    references = {kind: reference_weights(kind, base, ROWS) for kind in reference_kinds(CONFIGS)}
    for name, (kind, _, _, _) in CONFIGS.items():
        for rank in (0, 1):
            facts = json.loads((out / f"facts-{name}-rank{rank}.json").read_text())
            assert facts["distributed_type"] == "FSDP", (name, facts)
            assert facts["num_processes"] == 2 and facts["global_step"] == ROWS // 4, facts
            # fully_shard on the decoder layer and the root; every parameter a Shard(0) DTensor
            assert facts["fsdp_modules"] >= 2, (name, facts)
            assert facts["dtensor_sharded"] == facts["num_params"] > 0, (name, facts)
            if kind.startswith("sft"):
                assert facts["fused_head"] is (kind == "sft"), (name, facts)
        assert_parity(saved_weights(out / name), references, kind, f"fsdp2 {name}")


if __name__ == "__main__":
    force_fsdp_on_cpu()
    parity_worker(Path(sys.argv[1]), CONFIGS, ROWS)
