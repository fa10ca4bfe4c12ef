"""The fault matrix: SIGKILL each kind of grid process in turn during a mixed workload.

Each case runs 30 root flows (child flows, sleeps, receives of messages sent through the Client
API, HTTP calls to a counting loopback server, a workspace resource) on a grid of its own,
kills one process kind while the workload is busy, and then requires: no flow lost, every result
right, no recorded request performed twice (the server's counts against the journal's answers),
every request in flight at the kill declared interrupted and retried by the flow's own ``retry``,
and after a grid restart the old grid's in-flight requests declared interrupted within seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import Grid
from tests.integration.fault_workload import KINDS, FaultRun, SlowCountingServer

DONE_WITHIN = 60.0
"""Seconds after the kill for the whole workload to be done (undisturbed it takes a few)."""


@pytest.fixture
def slow_server() -> Iterator[SlowCountingServer]:
    server = SlowCountingServer(delay=0.5)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("kind", KINDS)
def test_no_flow_lost_and_nothing_performed_twice(kind: str, grid_factory: Any,
                                                  slow_server: SlowCountingServer) -> None:
    grid: Grid = grid_factory(workers=2)
    run = FaultRun(grid.paths, grid.project, slow_server, roots=30)
    try:
        run.start()
        run.inflict(kind)
        run.wait_done(DONE_WITHIN)
        report = run.report()
    finally:
        run.close()
    assert report.kill is not None and report.kill.pids, "nothing was killed"
    shown = report.problems[:12] + ([f"... and {len(report.problems) - 12} more"] if len(report.problems) > 12 else [])
    assert not report.problems, f"after killing {kind}:\n" + "\n".join(shown)


def test_the_checks_see_a_request_performed_twice(grid_factory: Any, slow_server: SlowCountingServer) -> None:
    """The matrix can fail: a request the server saw once more than the journal allows is reported."""
    grid: Grid = grid_factory(workers=2)
    run = FaultRun(grid.paths, grid.project, slow_server, roots=4)
    try:
        run.start()
        run.inflict(None)
        run.wait_done(DONE_WITHIN)
        assert run.report().problems == []
        slow_server.counts["/root/1"] += 1  # as if the grid had sent it again
        problems = run.report().problems
    finally:
        run.close()
    assert problems == ["/root/1: the server was sent 2 requests; the journal records 1 answered and 0 interrupted "
                        "(a recorded request was performed twice)"]
