"""Advisory locks that let several processes share one cache folder.

* :func:`folder_lock`: an exclusive lock on a whole folder, held by one process at a time (two
  ``igdbeam experiment`` runs training the same fine-tune into one folder).
* :class:`ItemClaims`: non-blocking claims on the numbered items of a folder (the decoded
  chunks of an experiment), so that processes working through the same list split it instead
  of doing each item twice.

Both live in one file per folder, :data:`LOCK_NAME`: the folder lock is an ``fcntl.flock`` on
it, a claim on item ``k`` is a POSIX record lock on its byte ``k`` (the two kinds do not
interact). The operating system releases either when its holder exits, even when it is killed:
a stale lock cannot outlive a crash. Where ``fcntl`` does not exist (Windows) both are no-ops.
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
    fd = _open_lock_file(path)
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


class ItemClaims:
    """Claims on the numbered items (0, 1, ...) of ``folder``, one holder per item at a time.

    A process claims an item before doing it and releases it once its output is written; a
    process that cannot claim an item goes on to the next and comes back later
    (:meth:`wait`), by which time the holder has usually finished it. Claims are held through
    one open descriptor, so one process uses one :class:`ItemClaims` per folder (POSIX record
    locks belong to the process: closing any descriptor of the file would drop them all).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, folder: str | Path) -> None:
        """Open (creating if missing) the lock file of ``folder``."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            self._fcntl = None
            self._fd = -1
            return
        self._fcntl = fcntl
        self._fd = _open_lock_file(Path(folder))

    def try_claim(self, item: int) -> bool:
        """Claim ``item`` if no other process holds it; True when this process now holds it."""
        if self._fcntl is None:  # pragma: no cover - Windows
            return True
        try:
            self._fcntl.lockf(self._fd, self._fcntl.LOCK_EX | self._fcntl.LOCK_NB, 1, item)
        except (BlockingIOError, PermissionError):  # EAGAIN / EACCES: held elsewhere
            return False
        return True

    def wait(self, item: int) -> None:
        """Claim ``item``, waiting as long as another process holds it."""
        if self._fcntl is not None:
            self._fcntl.lockf(self._fd, self._fcntl.LOCK_EX, 1, item)

    def release(self, item: int) -> None:
        """Release this process's claim on ``item`` (nothing happens if it holds none)."""
        if self._fcntl is not None:
            self._fcntl.lockf(self._fd, self._fcntl.LOCK_UN, 1, item)

    def close(self) -> None:
        """Release every claim and close the lock file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ItemClaims:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_lock_file(folder: Path) -> int:
    """A descriptor of ``folder``'s lock file, both created if missing."""
    folder.mkdir(parents=True, exist_ok=True)
    return os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
