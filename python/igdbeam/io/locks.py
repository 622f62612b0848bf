"""An exclusive, advisory lock on a folder, held by one process at a time.

Used where two processes could otherwise write the same cache (two ``igdbeam experiment`` runs
training the same fine-tune into one folder). The lock is an ``fcntl.flock`` on a file in the
folder, so the operating system releases it when its holder exits, even when it is killed: a
stale lock cannot outlive a crash. Where ``fcntl`` does not exist (Windows) the lock is a no-op.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".igdbeam-lock"


@contextmanager
def folder_lock(
    folder: str | Path,
    *,
    what: str,
    on_wait: Callable[[str], None] | None = None,
    poll_seconds: float = 5.0,
) -> Iterator[float]:
    """Hold the lock of ``folder`` (created if missing) for the ``with`` block.

    When another process holds it, ``on_wait`` (default: a line on stderr) is told once and the
    call waits until the lock is free. Yields the seconds spent waiting, so a caller can look
    again at what the other process produced (e.g. skip work it finished).

    Args:
        folder: the folder the lock guards.
        what: names the guarded work in the waiting message.
        on_wait: receives the waiting message.
        poll_seconds: how often a waiting process tries again.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield 0.0
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    t0 = time.monotonic()
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    message = f"igdbeam: another process is {what} ({path}); waiting for it"
                    (on_wait or _to_stderr)(message)
                    told = True
                time.sleep(poll_seconds)
        yield time.monotonic() - t0
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
