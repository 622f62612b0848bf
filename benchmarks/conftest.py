"""Benchmark plumbing: record baseline/igdbeam pairs and print their speed-up ratios.

Each benchmark calls ``ratios.record(group, role, benchmark)`` after timing; at the end of the
run a table of ``baseline mean / igdbeam mean`` per group is printed and, when
``IGDBEAM_BENCH_JSON`` names a file, written there as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# The pure-Python references live in tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

QUICK = os.environ.get("IGDBEAM_BENCH_QUICK", "0") not in ("", "0")


@dataclass
class RatioBook:
    """Mean times (seconds) and extra facts per (group, role)."""

    means: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, group: str, role: str, benchmark: Any, **facts: Any) -> None:
        """Store the mean time of a finished ``benchmark`` fixture under ``group``/``role``."""
        self.means.setdefault(group, {})[role] = float(benchmark.stats.stats.mean)
        if facts:
            self.extra.setdefault(group, {}).update(facts)
            benchmark.extra_info.update(facts)

    def rows(self) -> list[dict[str, Any]]:
        """One row per group: each role's mean and the baseline/igdbeam ratio(s)."""
        out = []
        for group, roles in sorted(self.means.items()):
            row: dict[str, Any] = {"group": group, **{f"{r}_s": v for r, v in roles.items()}}
            ours = roles.get("igdbeam")
            for role, mean in roles.items():
                if role != "igdbeam" and ours:
                    row[f"speedup_vs_{role}"] = mean / ours
            row.update(self.extra.get(group, {}))
            out.append(row)
        return out


_BOOK = RatioBook()


@pytest.fixture(scope="session")
def ratios() -> RatioBook:
    """The session's ratio book."""
    return _BOOK


def _print_loss_table(tr: Any) -> None:
    """bench_loss.py keeps its own (min, median) results: print them side by side."""
    module = sys.modules.get("benchmarks.bench_loss") or sys.modules.get("bench_loss")
    results = getattr(module, "RESULTS", None)
    if not results:
        return
    tr.section("igdbeam: baseline vs ours (seconds; ratio = ours / baseline)")
    tr.write_line(
        f"{'group':<28}{'base min':>12}{'ours min':>12}{'ratio':>8}"
        f"{'base median':>13}{'ours median':>13}{'ratio':>8}"
    )
    for group, row in results.items():
        if not {"baseline", "ours"} <= row.keys():
            continue
        (bm, bmed), (om, omed) = row["baseline"], row["ours"]
        tr.write_line(
            f"{group:<28}{bm:>12.6f}{om:>12.6f}{om / bm:>8.3f}{bmed:>13.6f}{omed:>13.6f}"
            f"{omed / bmed:>8.3f}"
        )
    # The IGD overhead of a training step, from the two losses alone over the plain step time
    # (stable under load, unlike the difference of two noisy step times).
    loss = next((r for g, r in results.items() if g.startswith("loss")), None)
    steps = [r["baseline"][0] for g, r in results.items() if g.startswith("train step")]
    if loss and steps and {"baseline", "ours"} <= loss.keys():
        extra = loss["ours"][0] - loss["baseline"][0]
        step = min(steps)  # the fastest plain step seen: a conservative (larger) percentage
        tr.write_line(
            f"estimated IGD overhead per training step: {extra * 1e3:.3f} ms of "
            f"{step * 1e3:.1f} ms = {100 * extra / step:.2f}% (minimum times)"
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the ratio tables and optionally save the ratio book as JSON."""
    _print_loss_table(terminalreporter)
    rows = _BOOK.rows()
    if not rows:
        return
    terminalreporter.section("igdbeam speed-ups (baseline mean / igdbeam mean)")
    for row in rows:
        parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()]
        terminalreporter.write_line("  ".join(parts))
    path = os.environ.get("IGDBEAM_BENCH_JSON")
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=2)
