"""Scheduling on a real grid: flows waiting on their children never keep the children from running."""

from __future__ import annotations

from typing import Any

from grid_local.worker.settings import WorkerSettings


def test_roots_waiting_on_children_do_not_keep_the_children_from_running(grid_factory: Any) -> None:
    # One worker with two slots, three roots: every slot is taken by a root before any child exists.
    # Waiting roots give their slots back, so the children run at once, long before suspend_after.
    grid = grid_factory(workers=1, worker_settings=WorkerSettings(slots=2))
    (grid.project / "flowmetal.toml").write_text('[project]\nname = "it"\n\n[limits]\nsuspend_after = 120\n')
    script = grid.write("parent.flow", """
        def _child_impl(fctx):
            return fctx.args.n * 10

        child = flow(implementation = _child_impl)

        if __name__ == "__flow__":
            a = fctx().actions
            print(child(n = fctx().args.n) + child(n = 1))
    """)
    ids = [grid.start(script, {"n": n}) for n in range(3)]

    flows = [grid.wait(flow_id, timeout=60) for flow_id in ids]

    assert [f["status"] for f in flows] == ["completed"] * 3
    assert [grid.logs(flow_id) for flow_id in ids] == [[str(n * 10 + 10)] for n in range(3)]
    assert all(f["resumes"] == 0 for f in flows), "a root was suspended: the children waited for suspend_after"


def test_past_max_waiting_a_waiting_flow_is_suspended_and_resumed(grid_factory: Any) -> None:
    grid = grid_factory(workers=1, worker_settings=WorkerSettings(slots=2, max_waiting=1))
    (grid.project / "flowmetal.toml").write_text('[project]\nname = "it"\n\n[limits]\nsuspend_after = 120\n')
    script = grid.write("nap.flow", """
        if __name__ == "__flow__":
            fctx().actions.sleep(0.5)
            print("awake")
    """)
    ids = [grid.start(script) for _ in range(3)]

    flows = [grid.wait(flow_id, timeout=60) for flow_id in ids]

    assert [f["status"] for f in flows] == ["completed"] * 3
    assert [grid.logs(flow_id) for flow_id in ids] == [["awake"]] * 3
    assert sum(f["resumes"] for f in flows) >= 1, "no flow was suspended, though only one may wait in memory"


def test_a_child_flow_runs_on_its_parents_worker_when_it_has_a_free_slot(grid_factory: Any) -> None:
    # With two workers, a child handed over in its parent's `run` answer must be evaluated by the
    # parent's worker every time (no claim race): the bundle is already loaded there.
    grid = grid_factory(workers=2)
    script = grid.write("calls.flow", """
        def _step_impl(fctx):
            return fctx.args.i + 1

        step = flow(implementation = _step_impl)

        if __name__ == "__flow__":
            total = 0
            for i in range(6):
                total += step(i = i)
            print(total)
    """)
    root = grid.start(script)

    assert grid.wait(root, timeout=60)["status"] == "completed"
    assert grid.logs(root) == ["21"]
    events = grid.client.events(after=0, root=root)["events"]
    running = [e for e in events if e["type"] == "flow" and e["status"] == "running"]
    parent_worker = next(e["worker"] for e in running if e["flow_id"] == root)
    children = [e for e in running if e["flow_id"] != root]
    assert len(children) == 6
    assert {e["worker"] for e in children} == {parent_worker}, children
    # The parent waits on one child at a time: it evaluates that child in its own thread before it
    # appends the wait, so each child ended before its parent's wait was even requested.
    ended = [e["id"] for e in events if e["type"] == "flow" and e["flow_id"] != root and e["status"] == "completed"]
    waits = [e["id"] for e in events if e["type"] == "request" and e["flow_id"] == root and e["kind"] == "wait"]
    assert len(ended) == len(waits) == 6
    assert all(end < wait for end, wait in zip(ended, waits)), (ended, waits)
