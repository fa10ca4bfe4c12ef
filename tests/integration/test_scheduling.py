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
