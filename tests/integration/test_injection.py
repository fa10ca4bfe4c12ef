"""Failure injection on the local grid: fail or delay a flow's next action, kill a process."""

from __future__ import annotations

import time

from tests.integration.conftest import Grid

WAITS_THEN_ACTS = """
if __name__ == "__flow__":
    a = fctx().actions
    a.receive()  # parked until the test has injected
    first = a.now(check = False)
    print("first ok:", first.ok, "error:", first.error)
    second = a.uuid(check = False)
    print("second ok:", second.ok)
"""


def _parked(grid: Grid, flow_id: str) -> None:
    deadline = time.monotonic() + 15
    while not any(e["kind"] == "receive" for e in grid.client.get_flow(flow_id)["journal"]):
        assert time.monotonic() < deadline, "the flow never reached its receive"
        time.sleep(0.02)


def test_fail_next_action(grid: Grid) -> None:
    script = grid.write("inject.flow", WAITS_THEN_ACTS)
    flow_id = grid.start(script)
    _parked(grid, flow_id)
    grid.client.inject(flow_id, "fail")
    grid.client.send(flow_id, "go")
    assert grid.wait(flow_id)["status"] == "completed"
    lines = grid.logs(flow_id)
    assert lines[0].startswith("first ok: False error: injected failure")
    assert lines[1] == "second ok: True"  # only the next action fails


def test_delay_next_action(grid: Grid) -> None:
    script = grid.write("inject.flow", WAITS_THEN_ACTS)
    flow_id = grid.start(script)
    _parked(grid, flow_id)
    grid.client.inject(flow_id, "delay", 1.5)
    began = time.monotonic()
    grid.client.send(flow_id, "go")
    assert grid.wait(flow_id)["status"] == "completed"
    assert time.monotonic() - began >= 1.5
    assert grid.logs(flow_id) == ["first ok: True error: None", "second ok: True"]


def test_kill_refuses_the_apis_and_unknown_pids(grid: Grid) -> None:
    import pytest

    from flowmetal_cli.client import NotFound

    api = next(p for p in grid.client.processes() if p["role"] == "worker-api")
    with pytest.raises(NotFound):
        grid.client.kill(api["pid"])
    worker = grid.processes("worker")[0]
    assert grid.client.kill(worker["pid"])["role"] == "worker"
