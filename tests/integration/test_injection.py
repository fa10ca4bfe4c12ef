"""Failure injection on the local grid: fail or delay a flow's next action, kill a process."""

from __future__ import annotations

import time

from grid_local.home import pid_alive
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


def _restarted(grid: Grid, role: str, old_pid: int) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = grid.paths.read_state() or {}
        found = next((p for p in state.get("processes", []) if p["role"] == role), None)
        if found and found["pid"] != old_pid and pid_alive(found["pid"]):
            return found
        time.sleep(0.05)
    raise AssertionError(f"the {role} was not restarted")


def test_kill_refuses_the_supervisor_and_unknown_pids(grid: Grid) -> None:
    """Injection kills only what the grid survives: workers, connectors and the two APIs."""
    import pytest

    from flowmetal_cli.client import ClientError, NotFound

    supervisor = next(p for p in grid.client.processes() if p["role"] == "supervisor")
    with pytest.raises(ClientError, match="supervisor") as refused:
        grid.client.kill(supervisor["pid"])
    assert refused.value.status == 409 and pid_alive(supervisor["pid"])
    with pytest.raises(NotFound):
        grid.client.kill(1)
    # A pid grid.json names that is not (or no longer) a child of the supervisor is left alone.
    import json
    import subprocess

    bystander = subprocess.Popen(["sleep", "60"])
    try:
        state = json.loads(grid.paths.state.read_text())
        state["processes"].append({"role": "worker", "name": "worker-9", "pid": bystander.pid, "id": "worker-9.x"})
        grid.paths.write_state(state)
        with pytest.raises(NotFound):
            grid.client.kill(bystander.pid)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
    worker = grid.processes("worker")[0]
    assert grid.client.kill(worker["pid"])["role"] == "worker"


def test_kill_the_apis_and_they_come_back(grid: Grid) -> None:
    worker_api = next(p for p in grid.client.processes() if p["role"] == "worker-api")
    assert grid.client.kill(worker_api["pid"])["role"] == "worker-api"
    _restarted(grid, "worker-api", worker_api["pid"])

    # The Client API killed by its own request answers first, then comes back on the same URL.
    client_api = next(p for p in grid.client.processes() if p["role"] == "client-api")
    assert grid.client.kill(client_api["pid"]) == {"killed": client_api["pid"], "role": "client-api"}
    _restarted(grid, "client-api", client_api["pid"])
    deadline = time.monotonic() + 30
    while True:
        try:
            assert grid.client.health()["ok"]
            break
        except Exception:
            assert time.monotonic() < deadline, "the Client API did not come back"
            time.sleep(0.1)
    supervisor = next(p for p in grid.client.processes() if p["role"] == "supervisor")
    assert pid_alive(supervisor["pid"])
