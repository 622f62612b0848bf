"""The CLI closes the ``torch.distributed`` group an ``accelerate launch`` run opened: after a
successful command every rank meets at a barrier and then destroys its group; after a failure
it only destroys it (a barrier could wait forever for a rank that died). The two-process run
itself is ``tests/test_cli.py::test_accelerate_two_processes``."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from igdbeam.app.cli import entry


@pytest.fixture
def group(monkeypatch) -> list[str]:
    """A process group that only records what is done with it."""
    calls: list[str] = []
    state = {"open": True}
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: state["open"])
    monkeypatch.setattr(dist, "barrier", lambda: calls.append("barrier"))

    def destroy() -> None:
        calls.append("destroy")
        state["open"] = False

    monkeypatch.setattr(dist, "destroy_process_group", destroy)
    return calls


@pytest.mark.parametrize(
    ("status", "expected"), [(0, ["barrier", "destroy"]), (1, ["destroy"]), (2, ["destroy"])]
)
def test_group_closed_after_the_command(group, monkeypatch, status, expected) -> None:
    monkeypatch.setitem(entry.COMMANDS, "stats", lambda args: status)
    assert entry.main(["stats", "--model", "m"]) == status
    assert group == expected


def test_group_destroyed_without_barrier_when_interrupted(group, monkeypatch) -> None:
    def interrupted(args):
        raise entry.Interrupted(15)

    monkeypatch.setitem(entry.COMMANDS, "stats", interrupted)
    assert entry.main(["stats", "--model", "m"]) == 128 + 15
    assert group == ["destroy"]


def test_no_group_nothing_done(monkeypatch) -> None:
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "barrier", lambda: pytest.fail("barrier without a group"))
    monkeypatch.setitem(entry.COMMANDS, "stats", lambda args: 0)
    assert entry.main(["stats", "--model", "m"]) == 0
