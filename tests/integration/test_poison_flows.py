"""Flows that kill or starve their workers: a memory cap per worker, and no crash loop."""

from __future__ import annotations

import time
from typing import Any

from grid_local.worker.settings import WorkerSettings

SMALL = WorkerSettings(slots=4, max_waiting=8, memory_mib=256)


def test_a_flow_that_kills_its_worker_fails_after_three_deaths_and_the_grid_goes_on(grid_factory: Any) -> None:
    grid = grid_factory(worker_settings=SMALL)
    # One allocation of 2 GB, over the worker's cap: the evaluator aborts the whole process.
    killer = grid.write("killer.flow", """
        def _grow_impl(fctx):
            fctx.actions.now()
            return len("x" * fctx.args.n)

        grow = flow(implementation = _grow_impl)

        if __name__ == "__flow__":
            print("calling")
            grow(n = 2000000000)
    """)
    root = grid.wait(grid.start(killer), timeout=120)

    assert root["status"] == "failed", root
    child = next(f for f in grid.client.list_flows() if f["parent"] == root["id"])
    expected = "the worker evaluating this flow died 3 times: last exit: out of memory (memory allocation of"
    assert child["status"] == "failed" and child["error"]["message"].startswith(expected), child["error"]
    assert expected in root["error"]["message"]  # the parent gets the child's error
    deadline = time.monotonic() + 30  # the supervisor restarts the third one just after it reported it
    while sum(p["restarts"] for p in grid.processes("worker")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(p["restarts"] for p in grid.processes("worker")) == 3

    fine = grid.write("fine.flow", 'print("still fine")\n')
    after = grid.wait(grid.start(fine), timeout=60)
    assert after["status"] == "completed" and grid.logs(after["id"]) == ["still fine"]


def test_a_flow_that_builds_a_huge_list_fails_out_of_memory_and_its_worker_lives(grid_factory: Any) -> None:
    grid = grid_factory(worker_settings=SMALL)
    hog = grid.write("hog.flow", """
        if __name__ == "__flow__":
            print("growing")
            x = [i for i in range(1000000000)]
    """)
    other = grid.write("other.flow", """
        if __name__ == "__flow__":
            fctx().actions.sleep(1)
            print("other done")
    """)
    other_id = grid.start(other)

    hogged = grid.wait(grid.start(hog), timeout=120)

    assert hogged["status"] == "failed"
    assert hogged["error"]["message"] == (
        "out of memory: this flow needed more memory than its worker may use (256 MiB per worker: "
        "grid up --worker-memory)")
    assert all(p["restarts"] == 0 for p in grid.processes("worker")), "the worker died instead of the flow"
    assert grid.wait(other_id, timeout=60)["status"] == "completed"
    assert grid.logs(other_id) == ["other done"]
