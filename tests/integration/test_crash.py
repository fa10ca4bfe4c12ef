"""Crash safety, tested by crashing: SIGKILL workers and connectors at the points that matter."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from grid_local.api.worker_auth import auth_headers
from grid_local.runtime.journal import INTERRUPTED
from tests.integration.conftest import CountingServer, Grid

EVERY_KIND = """
def _child_impl(fctx):
    print("child says hi")
    fctx.actions.now()
    return fctx.args.n * 2

child = flow(implementation = _child_impl)

if __name__ == "__flow__":
    a = fctx().actions
    me = fctx().flow_id
    t = a.now()
    r = a.random()
    u = a.uuid()
    print("started")
    a.sleep(0.05)
    resp = a.http("GET", fctx().args.url)
    doubled = child(n = 21)
    a.send(me, {"hello": "me"}, inbox = "loop")
    got = a.receive(inbox = "loop")
    print("done", doubled)
    # Replayed values must be the recorded ones: a second read of each comes from the journal.
    result = {"child": doubled, "path": resp.json["path"], "got": got, "uuid_len": len(u),
              "random_ok": r >= 0 and r < 1, "time_ok": t > 1700000000}
    print(json.encode(result))
"""


def _spawn_worker(grid: Grid, crash_after: int | None) -> subprocess.Popen[bytes]:
    env = dict(grid.env)
    env.pop("FLOWMETAL_TEST_CRASH_AFTER_APPENDS", None)
    if crash_after is not None:
        env["FLOWMETAL_TEST_CRASH_AFTER_APPENDS"] = str(crash_after)
    return subprocess.Popen(
        [sys.executable, "-m", "grid_local.worker.main", "--api", grid.state["worker_url"], "--name", "crashy"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _finish_with_workers(grid: Grid, flow_id: str, crash_after: int | None) -> tuple[dict[str, Any], int]:
    """Run a flow on a worker that dies by SIGKILL after ``crash_after`` writes, then on a clean one."""
    crashes = 0
    worker = _spawn_worker(grid, crash_after)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            flow = grid.client.get_flow(flow_id)
            if flow["status"] in ("completed", "failed", "cancelled"):
                return flow, crashes
            code = worker.poll()
            if code is not None:
                assert code == -signal.SIGKILL, f"worker exited with {code}, not by the injected SIGKILL"
                crashes += 1
                httpx.post(f"{grid.state['worker_url']}/v1/workers/crashy.{worker.pid}/gone",
                           headers=auth_headers(grid.paths.home))
                worker = _spawn_worker(grid, None)
            time.sleep(0.02)
        raise AssertionError(f"flow {flow_id} did not finish")
    finally:
        worker.kill()
        worker.wait()


def _writes_of(flow: dict[str, Any], grid: Grid) -> int:
    """Journal writes a worker makes for this tree: every request of root and child, plus each finish."""
    tree = [f for f in grid.client.list_flows(root=flow["root"])]
    return sum(len(grid.client.get_flow(f["id"])["journal"]) + 1 for f in tree)


def _check_tree(grid: Grid, root: str) -> list[str]:
    """No entry answered twice, print lines shown once; returns the tree's log lines."""
    tree = grid.client.list_flows(root=root)
    assert len([f for f in tree if f["parent"] == root]) == 1, "the child flow was started more than once"
    lines = []
    cursor = 0
    while True:
        page = grid.client.events(after=cursor, root=root)
        if not page["events"]:
            break
        cursor = page["cursor"]
        lines += [e["text"] for e in page["events"] if e["type"] == "log"]
        answered = [(e["flow_id"], e["seq"]) for e in page["events"] if e["type"] in ("result", "log")]
        assert len(answered) == len(set(answered)), "an entry was answered twice"
    return lines


def test_crash_after_every_journal_write(grid_factory: Any, http_server: CountingServer) -> None:
    grid: Grid = grid_factory(workers=0)
    script = grid.write("every.flow", EVERY_KIND)

    clean_id = grid.start(script, {"url": f"{http_server.url}/count/clean"})
    clean, crashes = _finish_with_workers(grid, clean_id, None)
    assert clean["status"] == "completed", clean["error"]
    assert crashes == 0
    expected = dict(json.loads(grid.logs(clean_id)[-1]), path=None)
    writes = _writes_of(clean, grid)
    assert writes >= 14  # 11 root actions + child's 2 + finishes

    for point in range(1, writes + 1):
        path = f"/count/{point}"
        flow_id = grid.start(script, {"url": f"{http_server.url}{path}"})
        flow, crashes = _finish_with_workers(grid, flow_id, point)
        assert flow["status"] == "completed", (point, flow["error"])
        # After the last write (the root's finish) the flow is already complete when the worker dies.
        assert crashes == 1 or point == writes, point
        outcome = json.loads(grid.logs(flow_id)[-1])
        assert dict(outcome, path=None) == expected, point
        assert outcome["path"] == path
        assert http_server.count(path) == 1, f"crash after write {point}: the HTTP request was performed again"
        assert _check_tree(grid, flow_id).count("started") == 1
        journal = grid.client.get_flow(flow_id)["journal"]
        assert [e["seq"] for e in journal] == list(range(1, len(journal) + 1))


RETRY_ON_INTERRUPT = """
if __name__ == "__flow__":
    a = fctx().actions
    first = a.http("GET", fctx().args.url, check = False)
    if not first.ok:
        print("first attempt:", first.error)
        second = a.http("GET", fctx().args.url)
        result = second.status
    else:
        result = first.value.status
"""


@pytest.mark.parametrize("when, expected_hits", [("before", 1), ("after", 2)])
def test_http_connector_crash_declares_request_interrupted(
    grid_factory: Any, http_server: CountingServer, tmp_path: Path, when: str, expected_hits: int
) -> None:
    marker = tmp_path / f"crashed-{when}"
    grid: Grid = grid_factory(extra_env={"FLOWMETAL_TEST_HTTP_CRASH": f"{when}:{marker}"})
    script = grid.write("retry.flow", RETRY_ON_INTERRUPT)
    flow_id = grid.start(script, {"url": f"{http_server.url}/hits"})
    flow = grid.wait(flow_id, timeout=40)
    assert marker.exists(), "the connector was not crashed"
    assert flow["status"] == "completed", flow["error"]
    journal = grid.client.get_flow(flow_id)["journal"]
    assert journal[0]["kind"] == "http" and journal[0]["result"]["error"] == INTERRUPTED
    assert [e["kind"] for e in journal] == ["http", "print", "http"]
    # "before": the interrupted request never left; "after": it did. Either way, never re-sent silently.
    assert http_server.count("/hits") == expected_hits


def test_sigkill_http_connector_in_flight(grid: Grid, http_server: CountingServer) -> None:
    http_server.slow_seconds = 20
    script = grid.write("slow.flow", """
        if __name__ == "__flow__":
            r = retry(lambda: fctx().actions.http("GET", fctx().args.url, timeout = 30, check = False),
                      limit = 3, backoff = 0.1)()
            print("status", r.status, "count", r.json["count"])
    """)
    flow_id = grid.start(script, {"url": f"{http_server.url}/slow-once"})
    assert http_server.arrived.wait(20), "the request never reached the server"
    http_server.slow_seconds = 0
    connector = grid.processes("connector:http")[0]
    assert [(r["flow_id"], r["kind"]) for r in connector["requests"]] == [(flow_id, "http")]
    os.kill(connector["pid"], signal.SIGKILL)
    flow = grid.wait(flow_id, timeout=40)
    assert flow["status"] == "completed", flow["error"]
    journal = grid.client.get_flow(flow_id)["journal"]
    https = [e for e in journal if e["kind"] == "http"]
    assert https[0]["result"]["error"] == INTERRUPTED
    assert https[-1]["result"]["ok"]
    assert http_server.count("/slow-once") == len(https)  # each recorded request was sent exactly once


def test_sigkill_worker_while_flow_waits(grid: Grid) -> None:
    script = grid.write("waits.flow", """
        if __name__ == "__flow__":
            a = fctx().actions
            before = a.now()
            a.sleep(1.5)
            print("slept", a.now() - before >= 1.5)
    """)
    flow_id = grid.start(script)
    holder = None
    for _ in range(200):
        flow = grid.client.get_flow(flow_id)
        if flow["worker"] and any(e["kind"] == "sleep" for e in flow["journal"]):
            holder = flow["worker"]
            break
        time.sleep(0.02)
    assert holder is not None
    pid = int(holder.rsplit(".", 1)[1])
    os.kill(pid, signal.SIGKILL)
    flow = grid.wait(flow_id)
    assert flow["status"] == "completed"
    assert grid.logs(flow_id) == ["slept True"]
    journal = flow_journal = grid.client.get_flow(flow_id)["journal"]
    assert [e["kind"] for e in flow_journal] == ["now", "sleep", "now", "print"]
    assert journal[-1]["worker"] != holder, "the flow should have finished on another worker"


def test_grid_down_during_sleep_fires_at_original_deadline(grid: Grid) -> None:
    script = grid.write("nap.flow", """
        if __name__ == "__flow__":
            fctx().actions.sleep(5)
            print("awake")
    """)
    started = time.time()
    flow_id = grid.start(script)
    for _ in range(200):
        if any(e["kind"] == "sleep" for e in grid.client.get_flow(flow_id)["journal"]):
            break
        time.sleep(0.02)
    assert grid.cli("grid", "down").returncode == 0
    time.sleep(1.0)
    up = grid.cli("grid", "up", "--workers", "2")
    assert up.returncode == 0, up.stderr
    up_at = time.time()  # the new grid is up; its workers replay the flow after this
    grid.refresh()
    flow = grid.wait(flow_id, timeout=30)
    assert flow["status"] == "completed"
    fired = next(e for e in flow["journal"] if e["kind"] == "sleep")["answered_at"]
    # Never early; and at the original deadline, not 5 s after the replay re-requested it (a
    # sleep restarted from scratch would fire 5 s after the new grid replayed the flow, past up_at + 5).
    assert fired >= started + 5.0, f"fired {fired - started:.2f} s after start"
    assert fired < up_at + 5.0, f"fired {fired - up_at:.2f} s after the grid was up again: the deadline was reset"


def test_fifty_flows_while_workers_are_killed(grid: Grid) -> None:
    script = grid.write("many.flow", """
        def _square_impl(fctx):
            fctx.actions.sleep(0.05)
            return fctx.args.n * fctx.args.n

        square = flow(implementation = _square_impl)

        if __name__ == "__flow__":
            n = fctx().args.n
            total = 0
            for i in range(5):
                fctx().actions.sleep(0.2)
                total += square(n = n + i)
            print(total)
    """)
    ids = {grid.start(script, {"n": n}): n for n in range(50)}
    rng = random.Random(7)
    deadline = time.monotonic() + 90
    kills = 0
    while time.monotonic() < deadline:
        statuses = {f["id"]: f["status"] for f in grid.client.list_flows(roots_only=True, limit=100)}
        if all(statuses.get(i) in ("completed", "failed", "cancelled") for i in ids):
            break
        if kills < 6:
            workers = grid.processes("worker")
            if workers:
                os.kill(rng.choice(workers)["pid"], signal.SIGKILL)
                kills += 1
        time.sleep(0.25)
    assert kills >= 3
    for flow_id, n in ids.items():
        flow = grid.client.get_flow(flow_id)
        assert flow["status"] == "completed", (flow_id, flow["error"])
        assert grid.logs(flow_id) == [str(sum((n + i) ** 2 for i in range(5)))]
        assert len(flow["children"]) == 5, "a child flow was started twice"
        results = [e for e in flow["journal"] if e["result"] is not None]
        assert len({e["seq"] for e in results}) == len(results)
