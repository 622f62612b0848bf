"""Prints the side-by-side ratio table of bench_loss.py after pytest-benchmark's own table."""

from __future__ import annotations

import sys
from pathlib import Path

# The pure-Python reference lives in tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest hook
    """Print baseline vs igdbeam mean times and their ratio for every benchmark group."""
    from bench_loss import RESULTS

    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("igdbeam: baseline vs ours (seconds; ratio = ours / baseline)")
    tr.write_line(
        f"{'group':<28}{'base min':>12}{'ours min':>12}{'ratio':>8}"
        f"{'base median':>13}{'ours median':>13}{'ratio':>8}"
    )
    for group, row in RESULTS.items():
        if not {"baseline", "ours"} <= row.keys():
            continue
        (bm, bmed), (om, omed) = row["baseline"], row["ours"]
        tr.write_line(
            f"{group:<28}{bm:>12.6f}{om:>12.6f}{om / bm:>8.3f}{bmed:>13.6f}{omed:>13.6f}"
            f"{omed / bmed:>8.3f}"
        )
    # The IGD overhead of a training step, from the two losses alone over the plain step time
    # (stable under load, unlike the difference of two noisy step times).
    loss = next((r for g, r in RESULTS.items() if g.startswith("loss")), None)
    steps = [r["baseline"][0] for g, r in RESULTS.items() if g.startswith("train step")]
    if loss and steps and {"baseline", "ours"} <= loss.keys():
        extra = loss["ours"][0] - loss["baseline"][0]
        step = min(steps)  # the fastest plain step seen: a conservative (larger) percentage
        tr.write_line(
            f"estimated IGD overhead per training step: {extra * 1e3:.3f} ms of "
            f"{step * 1e3:.1f} ms = {100 * extra / step:.2f}% (minimum times)"
        )
