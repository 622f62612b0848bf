"""``igdbeam.io.locks.folder_lock``: one holder at a time, waiters are told and wait, and an
experiment's second trainer of a folder finds the finished model instead of training again."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from igdbeam.io.locks import LOCK_NAME, folder_lock


def test_a_second_holder_waits_until_the_first_releases(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    told: list[str] = []
    acquired = threading.Event()
    waited: list[float] = []

    def second() -> None:
        with folder_lock(folder, what="training run", on_wait=told.append, poll_seconds=0.01) as w:
            waited.append(w)
            acquired.set()

    with folder_lock(folder, what="training run") as first_wait:
        assert first_wait < 1.0 and (folder / LOCK_NAME).is_file()
        worker = threading.Thread(target=second)
        worker.start()
        time.sleep(0.3)
        assert not acquired.is_set()  # still held here
        assert told == [f"igdbeam: another process is training run ({folder}); waiting for it"]
    worker.join(timeout=10)
    assert acquired.is_set() and waited[0] >= 0.25
    # Released again: a third holder gets it at once, without a message.
    with folder_lock(folder, what="x", on_wait=told.append) as w:
        assert w < 0.5 and len(told) == 1


def test_experiment_trainer_waits_and_skips_a_finished_fine_tune(tmp_path: Path, monkeypatch):
    from igdbeam.app.experiment import Experiment

    exp = Experiment(tmp_path / "exp", "tiny", progress=False)
    exp.lock_poll_seconds = 0.02
    trained: list[str] = []
    monkeypatch.setattr(
        Experiment, "_train_unlocked", lambda self, loss, seed, folder: trained.append(loss)
    )
    folder = exp.model_dir("plain", 0)
    result: list[Path] = []
    with folder_lock(folder, what="training"):
        worker = threading.Thread(target=lambda: result.append(exp.train("plain", 0)))
        worker.start()
        time.sleep(0.2)
        assert not result  # waiting for the holder
        (folder / "train_log.json").write_text(json.dumps({"loss": "plain"}))
    worker.join(timeout=30)
    assert result == [folder] and trained == []  # found the other process's model
    assert exp.train("igd", 0) == exp.model_dir("igd", 0) and trained == ["igd"]
