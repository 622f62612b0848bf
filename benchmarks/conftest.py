"""Benchmark plumbing: the one report format of every suite (baseline, igdbeam, ratio).

Each benchmark records its timing in the session's :class:`RatioBook` (the ``ratios`` fixture):
``ratios.record(group, role, benchmark)`` after a pytest-benchmark run, or
``ratios.record_seconds(group, role, mean, best)`` for a timing taken by hand. ``igdbeam`` is the
role every other role of its group (a baseline) is compared with. At the end of the run one table
lists, per group and baseline, the mean seconds of both and the ratio baseline / igdbeam (above 1:
igdbeam is faster), by mean and by minimum; facts recorded with a group follow it. With
``IGDBEAM_BENCH_JSON`` naming a file, the same rows are written there as JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import pytest

QUICK = os.environ.get("IGDBEAM_BENCH_QUICK", "0") not in ("", "0")
OURS = "igdbeam"


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one implementation: the mean and the minimum over the rounds."""

    mean: float
    best: float


@dataclass
class RatioBook:
    """Timings per (group, role) and extra facts per group."""

    times: dict[str, dict[str, Timing]] = field(default_factory=dict)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, group: str, role: str, benchmark: Any, per: int = 1, **facts: Any) -> None:
        """Store a finished pytest-benchmark fixture's mean and minimum (divided by ``per``
        calls per round) under ``group``/``role``; ``facts`` go with the group."""
        stats = benchmark.stats.stats
        self.record_seconds(group, role, stats.mean / per, stats.min / per, **facts)
        benchmark.extra_info.update(facts)

    def record_seconds(
        self, group: str, role: str, mean: float, best: float | None = None, **facts: Any
    ) -> None:
        """Store seconds per call measured by hand (``best`` defaults to ``mean``)."""
        best = mean if best is None else best
        self.times.setdefault(group, {})[role] = Timing(float(mean), float(best))
        self.note(group, **facts)

    def note(self, group: str, **facts: Any) -> None:
        """Attach facts (sizes, derived figures) to ``group``."""
        if facts:
            self.extra.setdefault(group, {}).update(facts)

    def rows(self) -> list[dict[str, Any]]:
        """One row per group: each role's seconds and each baseline's ratio to igdbeam."""
        out = []
        for group, roles in sorted(self.times.items()):
            row: dict[str, Any] = {"group": group}
            for role, t in roles.items():
                row[f"{role}_s"], row[f"{role}_min_s"] = t.mean, t.best
            ours = roles.get(OURS)
            for role, t in roles.items():
                if role != OURS and ours is not None:
                    row[f"speedup_vs_{role}"] = t.mean / ours.mean
                    row[f"speedup_min_vs_{role}"] = t.best / ours.best
            row.update(self.extra.get(group, {}))
            out.append(row)
        return out

    def table(self) -> list[str]:
        """The report: a line per (group, baseline), then the group's facts."""
        lines = [
            f"{'group':<44} {'baseline':<28} {'baseline s':>11} {'igdbeam s':>11} "
            f"{'ratio':>7} {'ratio(min)':>10}"
        ]
        for group, roles in sorted(self.times.items()):
            ours = roles.get(OURS)
            baselines = [r for r in roles if r != OURS] or ["-"]
            for role in baselines:
                base = roles.get(role)
                cells = [
                    f"{base.mean:>11.4g}" if base else f"{'-':>11}",
                    f"{ours.mean:>11.4g}" if ours else f"{'-':>11}",
                    f"{base.mean / ours.mean:>7.3g}" if base and ours else f"{'-':>7}",
                    f"{base.best / ours.best:>10.3g}" if base and ours else f"{'-':>10}",
                ]
                lines.append(f"{group:<44} {role:<28} " + " ".join(cells))
            facts = self.extra.get(group)
            if facts:
                lines.append("    " + "  ".join(f"{k}={_fmt(v)}" for k, v in facts.items()))
        return lines


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


_BOOK = RatioBook()


@pytest.fixture(scope="session")
def ratios() -> RatioBook:
    """The session's ratio book."""
    return _BOOK


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the ratio table and optionally save the ratio book as JSON."""
    if not _BOOK.times:
        return
    terminalreporter.section("igdbeam vs baselines (seconds per call; ratio = baseline / igdbeam)")
    for line in _BOOK.table():
        terminalreporter.write_line(line)
    path = os.environ.get("IGDBEAM_BENCH_JSON")
    if path:
        with open(path, "w") as f:
            json.dump(_BOOK.rows(), f, indent=2)
