"""Several processes decode one experiment together: ``igdbeam.io.locks.ItemClaims`` gives each
chunk one holder at a time, and ``Experiment.decode`` passes over chunks another process holds,
then waits for them and decodes only those their holder left unwritten."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from igdbeam.app.experiment import Experiment
from igdbeam.app.experiment_profiles import PROFILES, decodings, run_name
from igdbeam.io.locks import ItemClaims

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fcntl locks (no-ops on Windows)")

# A second process: claims item K of FOLDER, says "held", waits for a line on stdin, then writes
# the chunk file WRITE (unless it is "-") and exits, which releases the claim.
HOLDER = textwrap.dedent(
    """
    import json, sys
    from igdbeam.io.locks import ItemClaims
    folder, k, write = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    claims = ItemClaims(folder)
    assert claims.try_claim(k)
    print("held", flush=True)
    sys.stdin.readline()
    if write != "-":
        open(write, "w").write(sys.argv[4])
    """
)


def start_holder(
    folder: Path, k: int, write: Path | None = None, text: str = ""
) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), str(k), str(write or "-"), text],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def finish(proc: subprocess.Popen) -> None:
    proc.communicate("go\n", timeout=30)  # closes the pipes
    assert proc.returncode == 0


def test_a_claim_held_by_another_process_cannot_be_taken_until_it_ends(tmp_path: Path) -> None:
    holder = start_holder(tmp_path, 3)
    with ItemClaims(tmp_path) as claims:
        assert not claims.try_claim(3)
        assert claims.try_claim(2) and claims.try_claim(4)  # neighbouring bytes are free
        claims.release(2)
        finish(holder)
        assert claims.try_claim(3)  # the holder's exit released it
        claims.wait(3)  # already ours: returns at once


@dataclass
class Row:
    user_id: int


def experiment(tmp_path: Path) -> tuple[Experiment, Path]:
    exp = Experiment(tmp_path, replace(PROFILES["tiny"], decode_chunk=2), progress=False)
    exp.test_rows = [Row(user_id=i) for i in range(9)]  # chunks of 2, 2, 2, 2, 1 rows
    return exp, tmp_path / "decodes" / run_name("plain", 0, exp.profile.beta)


def chunk_json(start: int, n: int, item: int, methods: list[str]) -> str:
    ids = {m: [[item] * 3] * n for m in methods}
    return json.dumps({"rows": [start, start + n], "item_ids": ids})


def fake_decoder(exp: Experiment, methods: list[str], decoded: list[int], on_chunk=None):
    def decode_chunk(model, rows, start, path):  # noqa: ANN001, ANN202
        assert model == "model"
        decoded.append(start // 2)
        path.write_text(chunk_json(start, len(rows), 100 + start // 2, methods))
        if on_chunk is not None:
            on_chunk(start // 2)

    exp._decode_chunk = decode_chunk  # type: ignore[method-assign]
    exp.load_trained = lambda loss, seed: "model"  # type: ignore[method-assign]


def test_decode_passes_over_a_chunk_another_process_holds_and_uses_what_it_wrote(tmp_path):
    exp, folder = experiment(tmp_path)
    methods = list(decodings(exp.profile))
    other = chunk_json(2, 2, 7, methods)  # chunk 1, as the other process decodes it
    holder = start_holder(folder, 1, folder / "chunk-0001.json", other)
    decoded: list[int] = []
    # The holder finishes once this process has decoded every chunk it could claim.
    fake_decoder(exp, methods, decoded, on_chunk=lambda k: finish(holder) if k == 4 else None)
    result = exp.decode("plain", 0)
    assert decoded == [0, 2, 3, 4]  # chunk 1 was the other process's
    for m in methods:
        assert [row[0] for row in result[m].tolist()] == [100, 100, 7, 7, 102, 102, 103, 103, 104]


def test_decode_does_a_chunk_whose_holder_stopped_without_writing_it(tmp_path: Path) -> None:
    exp, folder = experiment(tmp_path)
    methods = list(decodings(exp.profile))
    (folder).mkdir(parents=True)
    (folder / "chunk-0003.json").write_text(chunk_json(6, 2, 9, methods))  # cached earlier
    holder = start_holder(folder, 0)  # dies without writing chunk 0
    decoded: list[int] = []
    fake_decoder(exp, methods, decoded, on_chunk=lambda k: finish(holder) if k == 4 else None)
    result = exp.decode("plain", 0)
    assert decoded == [1, 2, 4, 0]  # 3 was cached; 0 done last, after its holder ended
    assert result[methods[0]][:, 0].tolist() == [100, 100, 101, 101, 102, 102, 9, 9, 104]
