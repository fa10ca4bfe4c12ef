"""Runaway code on a real grid: bounded by flowmetal.toml's [limits], a clear error, a healthy grid after."""

from __future__ import annotations

from tests.integration.conftest import Grid


def test_runaway_loop_and_recursion_fail_clearly_and_the_grid_goes_on(grid: Grid) -> None:
    (grid.project / "flowmetal.toml").write_text('[project]\nname = "it"\n\n[limits]\neval_budget = 0.5\nmax_callstack = 40\n')
    loop = grid.write("loop.flow", """
        def spin():
            n = 0
            for i in range(2000000000):
                n += i
            return n

        if __name__ == "__flow__":
            print("starting")
            spin()
    """)
    done = grid.cli("run", str(loop), timeout=60)
    assert done.returncode == 1
    assert "evaluation budget exceeded" in done.stderr and "0.5 s" in done.stderr
    assert done.stdout == "starting\n"

    deep = grid.write("deep.flow", """
        def down(n):
            return down(n + 1)

        if __name__ == "__flow__":
            down(0)
    """)
    done = grid.cli("run", str(deep), timeout=60)
    assert done.returncode == 1
    assert "call stack limit exceeded (40 frames" in done.stderr

    ok = grid.write("ok.flow", 'print("still fine")\n')
    done = grid.cli("run", str(ok))
    assert done.returncode == 0 and done.stdout == "still fine\n"
    failed = [f for f in grid.client.list_flows() if f["status"] == "failed"]
    assert len(failed) == 2
    for flow in failed:
        journal = grid.client.get_flow(flow["id"])["journal"]
        assert all(e["result"] is not None for e in journal), "a failed flow left an unanswered request"


def test_long_wait_suspends_the_flow_and_a_result_resumes_it(grid: Grid) -> None:
    import time

    (grid.project / "flowmetal.toml").write_text('[project]\nname = "it"\n\n[limits]\nsuspend_after = 0.3\n')
    script = grid.write("nap.flow", """
        if __name__ == "__flow__":
            print("before")
            fctx().actions.sleep(1.5)
            print("after")
    """)
    flow_id = grid.start(script)
    seen_waiting = False
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        flow = grid.client.get_flow(flow_id)
        if flow["status"] == "waiting":
            seen_waiting = True
            assert flow["worker"] is None, "a suspended flow holds no worker"
        if flow["status"] == "completed":
            break
        time.sleep(0.05)
    assert seen_waiting, "the flow never suspended"
    assert flow["status"] == "completed" and flow["resumes"] == 1
    assert grid.logs(flow_id) == ["before", "after"]  # replay printed nothing twice
    running = [e for e in grid.client.events(after=0, root=flow_id)["events"]
               if e["type"] == "flow" and e.get("status") == "running"]
    assert [e.get("replay") for e in running] == [0, 2]  # resumed on a journal of two: print and sleep
