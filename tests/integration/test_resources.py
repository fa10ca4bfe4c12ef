"""Resources: opened before the implementation, usable through exec, closed however the flow ends."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.integration.conftest import Grid

BUILD = """
load("pkg.flowmetal.io/workspace/v1", "workspace", "exec")

def _build_impl(fctx):
    ws = fctx.resources.ws
    exec(ws, "sh", "-c", "echo {} > out.txt".format(fctx.args.word))
    fctx.actions.sleep(fctx.args.nap)
    r = exec(ws, "cat", "out.txt")
    missing = exec(ws, "sh", "-c", "exit 3")
    return {"out": r.stdout.strip(), "code": missing.exit_code}

build = flow(implementation = _build_impl, resources = {"ws": lambda fctx: workspace()})

if __name__ == "__flow__":
    r = build(word = fctx().args.word, nap = fctx().args.nap)
    print(r["out"], r["code"])
"""


def _workspaces(grid: Grid) -> list[Path]:
    root = grid.paths.workspaces
    return sorted(root.iterdir()) if root.exists() else []


def _wait_until(predicate, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _child_holding_workspace(grid: Grid, root: str) -> dict:  # type: ignore[type-arg]
    found: dict = {}  # type: ignore[type-arg]

    def ready() -> bool:
        for flow in grid.client.list_flows(root=root):
            if flow["parent"] == root:
                detail = grid.client.get_flow(flow["id"])
                if any(e["kind"] == "sleep" for e in detail["journal"]):
                    found.update(detail)
                    return True
        return False

    assert _wait_until(ready), "the child never reached its sleep"
    return found


def test_workspace_is_opened_used_and_removed(grid: Grid) -> None:
    script = grid.write("build.flow", BUILD)
    flow_id = grid.start(script, {"word": "hello", "nap": 0})
    assert grid.wait(flow_id)["status"] == "completed"
    assert grid.logs(flow_id) == ["hello 3"]
    child = next(f for f in grid.client.list_flows(root=flow_id) if f["parent"] == flow_id)
    kinds = [e["kind"] for e in grid.client.get_flow(child["id"])["journal"]]
    assert kinds[0] == "open", "the resource must be opened before the implementation runs"
    assert _wait_until(lambda: not _workspaces(grid)), "the workspace outlived its flow"


def test_nothing_leaks_when_workers_and_the_grid_die(grid: Grid) -> None:
    script = grid.write("build.flow", BUILD)
    flow_id = grid.start(script, {"word": "durable", "nap": 1.0})
    child = _child_holding_workspace(grid, flow_id)
    assert [p.name for p in _workspaces(grid)] == [child["id"]]
    os.kill(int(child["worker"].rsplit(".", 1)[1]), signal.SIGKILL)
    assert grid.cli("grid", "down").returncode == 0
    assert grid.cli("grid", "up", "--workers", "2").returncode == 0
    grid.refresh()
    assert grid.wait(flow_id)["status"] == "completed"
    assert grid.logs(flow_id) == ["durable 3"]  # the file written before the crashes is still there
    opens = [e for e in grid.client.get_flow(child["id"])["journal"] if e["kind"] == "open"]
    assert len(opens) == 1, "a resource is opened once, then replayed from the journal"
    assert _wait_until(lambda: not _workspaces(grid)), "the workspace outlived its flow"


def test_cancel_closes_resources(grid: Grid) -> None:
    script = grid.write("build.flow", BUILD)
    flow_id = grid.start(script, {"word": "x", "nap": 30})
    _child_holding_workspace(grid, flow_id)
    assert grid.cli("cancel", flow_id).returncode == 0
    assert _wait_until(lambda: not _workspaces(grid)), "a cancelled flow's workspace was left behind"


def test_unknown_resource_kind_fails_clearly(grid: Grid) -> None:
    script = grid.write("kube.flow", """
        def _impl(fctx):
            return 1

        boxed = flow(implementation = _impl, resources = {"box": lambda fctx: {"kind": "kubernetes", "image": "x"}})

        if __name__ == "__flow__":
            boxed()
    """)
    done = grid.cli("run", str(script))
    assert done.returncode == 1
    assert "cannot open resource 'box'" in done.stderr and "kind 'kubernetes'" in done.stderr
    assert "Traceback (most recent call last):\n  File" not in done.stderr
