"""Workers under faults: the Worker API SIGKILLed under them, poison inputs, limits above the grid's maxima."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from grid_local.bundle_format import write_bundle
from grid_local.worker.settings import WorkerSettings
from tests.integration.conftest import CountingServer, Grid

MIXED = """
def _leaf_impl(fctx):
    fctx.actions.sleep(0.1)
    return fctx.args.n + 1

leaf = flow(implementation = _leaf_impl)

if __name__ == "__flow__":
    a = fctx().actions
    n = fctx().args.n
    total = 0
    for i in range(4):
        total += leaf(n = n + i)
        a.sleep(0.2)
        a.http("GET", fctx().args.url + "/hit")
    print(total)
"""


def _worker_api_pid(grid: Grid) -> int:
    return int(grid.processes("worker-api")[0]["pid"])


def _kill_worker_api(grid: Grid) -> None:
    """SIGKILL the Worker API and wait until the supervisor has a new one serving."""
    old = _worker_api_pid(grid)
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = grid.processes("worker-api")
        if alive and alive[0]["pid"] != old:
            return
        time.sleep(0.05)
    raise AssertionError("the supervisor did not restart the Worker API")


def _wait_all(grid: Grid, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        flows = [grid.client.get_flow(flow_id) for flow_id in ids]
        if all(f["status"] in ("completed", "failed", "cancelled") for f in flows):
            return flows
        if time.monotonic() > deadline:
            stuck = [(f["id"], f["status"], f["worker"]) for f in flows if f["status"] not in ("completed", "failed")]
            raise AssertionError(f"{len(stuck)} flows stranded: {stuck[:5]}")
        time.sleep(0.2)


def test_flows_complete_while_the_worker_api_is_killed_again_and_again(grid: Grid, http_server: CountingServer) -> None:
    script = grid.write("mixed.flow", MIXED)
    ids = [grid.start(script, {"n": n, "url": http_server.url}) for n in range(12)]
    for _ in range(3):
        # Kill it while flows are in the middle of their work: after some more HTTP calls arrived.
        seen = http_server.count("/hit")
        deadline = time.monotonic() + 30
        while http_server.count("/hit") < seen + 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        _kill_worker_api(grid)

    flows = _wait_all(grid, ids, timeout=90)

    assert [f["status"] for f in flows] == ["completed"] * len(ids), [f["error"] for f in flows]
    for n, flow_id in enumerate(ids):
        assert grid.logs(flow_id) == [str(sum(n + i + 1 for i in range(4)))]
    # Each flow made 4 calls; one interrupted by a kill may be declared failed (never re-sent), never sent twice.
    assert http_server.count("/hit") <= 4 * len(ids)
    survivors = [p for p in grid.client.processes() if p["role"] == "worker" or p["role"].startswith("connector:")]
    assert survivors and all(p["restarts"] == 0 for p in survivors), "a worker or connector died with the Worker API"


def test_an_oversized_child_result_fails_the_child_and_its_parent_clearly(grid: Grid) -> None:
    script = grid.write("big.flow", """
        def _big_impl(fctx):
            return "x" * (5 * 1024 * 1024)

        big = flow(implementation = _big_impl)

        if __name__ == "__flow__":
            big()
    """)
    root = grid.wait(grid.start(script), timeout=60)

    assert root["status"] == "failed"
    assert "the result of flow big is 5.0 MiB, over the 4 MiB limit" in root["error"]["message"]
    child = next(f for f in grid.client.list_flows() if f["parent"] == root["id"])
    assert child["status"] == "failed"
    assert child["error"]["message"] == "the result of flow big is 5.0 MiB, over the 4 MiB limit"


def test_a_bad_limit_in_flowmetal_toml_fails_the_flow_naming_the_setting(grid: Grid) -> None:
    (grid.project / "flowmetal.toml").write_text('[project]\nname = "it"\n\n[limits]\neval_budget = "abc"\n')
    script = grid.write("hello.flow", 'print("never")\n')
    refused = grid.cli("run", str(script))
    assert refused.returncode == 2  # the CLI refuses such a bundle before uploading it
    assert refused.stderr.strip().endswith("flowmetal.toml:1: [limits] eval_budget must be a number, got 'abc'")
    # A bundle that reaches the grid anyway (another client) fails its flows, saying why.
    data, digest = write_bundle("hello.flow", {"hello.flow": 'print("never")\n'}, {"limits": {"eval_budget": "abc"}})
    grid.client.upload_bundle(data, digest)

    flow = grid.wait(grid.client.start_flow(digest, {})["id"], timeout=60)

    assert flow["status"] == "failed"
    assert flow["error"]["message"] == "flowmetal.toml: [limits] eval_budget must be a number, got 'abc'"


def test_limits_above_the_grids_maxima_are_held_at_the_maxima(grid_factory: Any) -> None:
    grid = grid_factory(worker_settings=WorkerSettings(max_eval_budget=1.0, max_callstack=50))
    (grid.project / "flowmetal.toml").write_text(
        '[project]\nname = "it"\n\n[limits]\neval_budget = 1e9\nmax_callstack = 100000000\n')
    spin = grid.write("spin.flow", """
        n = 0
        for i in range(2000000000):
            n += i
    """)
    deep = grid.write("deep.flow", """
        def down(n):
            return down(n + 1)

        down(0)
    """)

    spun, fell = grid.wait(grid.start(spin), timeout=60), grid.wait(grid.start(deep), timeout=60)

    assert spun["status"] == "failed"
    assert spun["error"]["message"].startswith("evaluation budget exceeded: more than 1 s of evaluation")
    assert "capped at the grid's maximum: grid up --max-eval-budget" in spun["error"]["message"]
    assert fell["status"] == "failed"
    assert fell["error"]["message"].startswith("call stack limit exceeded (50 frames;")
    assert all(p["restarts"] == 0 for p in grid.processes("worker"))


def test_the_default_maximum_call_stack_keeps_workers_alive(grid: Grid) -> None:
    (grid.project / "flowmetal.toml").write_text('[project]\nname = "it"\n\n[limits]\nmax_callstack = 100000000\n')
    deep = grid.write("deep.flow", """
        def down(n):
            return down(n + 1)

        down(0)
    """)

    fell = grid.wait(grid.start(deep), timeout=60)

    assert fell["status"] == "failed"
    assert fell["error"]["message"].startswith(f"call stack limit exceeded ({WorkerSettings().max_callstack} frames;")
    assert all(p["restarts"] == 0 for p in grid.processes("worker"))
