"""The ``igdbeam`` entry point: dispatch to the command, one-line errors, signal handling."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from igdbeam.app.cli import demo, experiment, prepare, recommend, serve, stats, train
from igdbeam.app.cli.optional_packages import missing_packages_message
from igdbeam.app.cli.out_checks import CREATED_DIRS, remove_created_dirs
from igdbeam.app.cli.parser import build_parser
from igdbeam.app.cli.plots import PlotError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "prepare": prepare.cmd_prepare,
    "stats": stats.cmd_stats,
    "train": train.cmd_train,
    "recommend": recommend.cmd_recommend,
    "evaluate": recommend.cmd_evaluate,
    "demo": demo.cmd_demo,
    "experiment": experiment.cmd_experiment,
    "serve": serve.cmd_serve,
}


class Interrupted(KeyboardInterrupt):
    """Raised by the CLI's SIGINT / SIGTERM handler, so ``finally`` blocks and context managers
    remove temporary files before the command ends with exit status ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        """Remember the signal number."""
        super().__init__(signum)
        self.signum = signum


def _install_signal_handlers() -> dict[int, Any]:
    """Make SIGINT and SIGTERM raise :class:`Interrupted` once (later ones are ignored, so the
    clean-up finishes); signals that are ignored (``nohup``) stay ignored. Returns the previous
    handlers for :func:`_restore_signal_handlers`."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    fired: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        if fired:
            return
        fired.append(signum)
        raise Interrupted(signum)

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(sig)
        if old in (signal.SIG_IGN, None):
            continue
        previous[sig] = old
        signal.signal(sig, handler)
    return previous


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)


def _one_line(exc: BaseException) -> str:
    """The exception as one line; OS errors as 'reason: path'."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        msg = f"{exc.strerror}: {str(exc.filename)!r}"
        if exc.filename2 is not None:
            msg += f" -> {str(exc.filename2)!r}"
    else:
        msg = str(exc) or type(exc).__name__
    return " ".join(msg.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``igdbeam`` command; returns the exit status.

    Input and output errors end with one ``igdbeam: error: ...`` line and status 2; SIGINT and
    SIGTERM with one ``igdbeam: interrupted`` line and status 130 / 143, after temporary files
    were removed (earlier outputs stay intact).
    """
    previous = _install_signal_handlers()
    CREATED_DIRS.clear()
    status = 1
    try:
        status = _main(argv)
        return status
    except KeyboardInterrupt as exc:
        remove_created_dirs()
        print("igdbeam: interrupted", file=sys.stderr, flush=True)
        status = 128 + (exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)
        return status
    finally:
        _close_process_group(wait_for_peers=status == 0)
        _restore_signal_handlers(previous)


def _close_process_group(*, wait_for_peers: bool) -> None:
    """End the ``torch.distributed`` group that ``accelerate launch`` runs opened.

    A rank that leaves the interpreter with its gloo group still open can abort in the group's
    destructor ("terminate called without an active exception") while another rank is still
    writing the gathered results. After a successful command every rank waits for the others
    (a barrier), then each destroys its group; after a failure a barrier could wait forever, so
    the group is only destroyed. Commands that never imported ``torch.distributed`` skip this.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    try:
        if wait_for_peers:
            dist.barrier()
    finally:
        dist.destroy_process_group()


def _is_cuda_unavailable(exc: BaseException) -> bool:
    from igdbeam.errors import CudaUnavailableError

    return isinstance(exc, CudaUnavailableError)


def _main(argv: Sequence[str] | None) -> int:
    from igdbeam.app.assets import AssetError

    parser = build_parser()
    args = parser.parse_args(argv)
    # The argparse types check every number; this is a safety net for options declared
    # without one.
    for opt in ("num_beams", "batch_size", "num_users", "threads", "max_history_items"):
        value = getattr(args, opt, None)
        if value is not None and value <= 0:
            parser.error(f"--{opt.replace('_', '-')} must be positive, got {value}")
    if getattr(args, "alpha", None) is not None and not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must lie in [0, 1], got {args.alpha}")
    if getattr(args, "beta", None) is not None and not 0.0 <= args.beta <= 1.0:
        parser.error(f"--beta must lie in [0, 1], got {args.beta}")
    # Optional packages (plots, LoRA, ...) before any work, so nothing is lost to a missing one.
    missing = missing_packages_message(args)
    if missing is not None:
        parser.exit(2, f"igdbeam: error: {missing}\n")
    try:
        return COMMANDS[args.command](args)
    except PlotError as exc:
        # The results are complete and in place; only a figure is missing.
        print(f"igdbeam: error: {_one_line(exc)}", file=sys.stderr, flush=True)
        return 1
    except (AssetError, NotImplementedError, OSError, ValueError, RuntimeError) as exc:
        # ValueError covers DataFormatError and igdbeam.errors' input errors; OSError covers
        # missing, existing and unwritable paths; of the RuntimeErrors only a CUDA request
        # without a GPU is the user's to fix (igdbeam.errors imports torch: only now).
        if isinstance(exc, RuntimeError) and not _is_cuda_unavailable(exc):
            raise
        remove_created_dirs()
        parser.exit(2, f"igdbeam: error: {_one_line(exc)}\n")
    return 2  # pragma: no cover - parser.exit raises
