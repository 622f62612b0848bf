"""A child interpreter for code that may crash: a segfault or an abort fails one test, not pytest.

The child imports igdbeam once and runs job after job sent over its stdin; a job that kills it is
reported with the child's exit status, and the next job starts a fresh child.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

WORKER = textwrap.dedent(
    """
    import contextlib, io, json, sys, traceback
    import igdbeam  # imported once (seconds); every job runs in this process until one crashes

    for line in sys.stdin:
        job = json.loads(line)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                sys.argv = ["-c", *job["args"]]
                exec(job["code"], {"__name__": "__main__"})
            ok = True
        except BaseException:
            ok = False
            out.write(traceback.format_exc())
        sys.stdout.write(json.dumps({"ok": ok, "out": out.getvalue()}) + "\\n")
        sys.stdout.flush()
    """
)


class IsolatedPython:
    """Runs code in a child interpreter, so that a crash (segfault, abort) fails one test.

    The child imports igdbeam once and runs job after job; a job that kills it is reported with
    the child's exit status, and the next job starts a fresh child.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()

    def _start(self) -> None:
        import igdbeam

        self.close()

        package_root = str(Path(igdbeam.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines = queue.Queue()
        stdout, lines = self.proc.stdout, self.lines

        def pump() -> None:
            assert stdout is not None
            with contextlib.suppress(ValueError, OSError):  # the pipe closed under us
                for line in stdout:
                    lines.put(line)
            lines.put(None)  # EOF: the child is gone

        threading.Thread(target=pump, daemon=True).start()

    def run(self, code: str, *args: str, timeout: float = 300) -> tuple[bool, str]:
        """Run ``code`` with ``sys.argv[1:] == args``; return ``(ok, output)``.

        ``ok`` is False when the code raised (output ends with the traceback) or the child died
        or hung (output names its exit status).
        """
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        proc = self.proc
        assert proc is not None and proc.stdin is not None
        proc.stdin.write(json.dumps({"code": code, "args": list(args)}) + "\n")
        proc.stdin.flush()
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            proc.kill()
            proc.wait()
            self.close()
            return False, f"the child hung for {timeout} s and was killed"
        if line is None:
            status = proc.wait()
            stderr = proc.stderr.read() if proc.stderr is not None else ""
            self.close()
            return False, (
                f"the child died with exit status {status} (negative: signal {-status})\n"
                f"stderr: {stderr[-4000:]}"
            )
        reply = json.loads(line)
        return bool(reply["ok"]), str(reply["out"])

    def close(self) -> None:
        """Stop the child (if alive) and close its pipes."""
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self.proc = None
