"""Plots after results: a plot that cannot be drawn never discards the results written before it.

Commands write their result files first and then call :func:`try_plot` for each figure; the
failures are collected and, once every result is in place, :class:`PlotError` ends the command
with exit status 1 and one line that names the results' folder and each failed plot.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


class PlotError(RuntimeError):
    """One or more plots failed after the command's results were written (they are kept)."""

    def __init__(self, done: str, failures: list[str]) -> None:
        """``done`` says where the results are (e.g. ``"the results are in 'eval/'"``)."""
        self.done = done
        self.failures = list(failures)
        super().__init__(f"{done}, but " + "; ".join(self.failures))


def try_plot(
    failures: list[str], plot: Callable[..., Any], path: Path, *args: Any, **kwargs: Any
) -> bool:
    """Draw ``plot(*args, path_to_write, **kwargs)`` into ``path`` atomically.

    The figure goes to a temporary file next to ``path`` and is renamed into place only when
    complete. Any exception (a missing or broken matplotlib, a full disk, ...) is recorded in
    ``failures`` as ``"<file> could not be drawn: <reason>"`` instead of propagating, and no
    partial image is left. ``KeyboardInterrupt`` still propagates.

    Returns:
        True when the plot was written.
    """
    from igdbeam.io import atomic_path

    try:
        with atomic_path(path) as tmp:
            plot(*args, tmp, **kwargs)
    except Exception as exc:
        reason = " ".join((str(exc) or type(exc).__name__).split())
        failures.append(f"{path.name} could not be drawn ({type(exc).__name__}: {reason})")
        return False
    return True
