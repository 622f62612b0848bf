"""Benchmark plumbing: record baseline/igdbeam pairs and print their speed-up ratios.

Each benchmark calls ``ratios.record(group, role, benchmark)`` after timing; at the end of the
run a table of ``baseline mean / igdbeam mean`` per group is printed and, when
``IGDBEAM_BENCH_JSON`` names a file, written there as JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import pytest

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


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the ratio table and optionally save it as JSON."""
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
