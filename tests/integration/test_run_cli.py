"""`flowmetal run --context=local` end to end: real grid processes, real CLI subprocesses."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.conftest import Grid

HELLO = """
load("pkg.flowmetal.io/prelude/v1", "flow", "FlowContext")

def _whoami_impl(fctx: FlowContext) -> str:
    return fctx.quota.username

whoami = flow(implementation = _whoami_impl)

def hello():
    print("Hello from Flowmetal, {}!".format(whoami()))

if __name__ == "__flow__":
    hello()
"""

PARALLEL = """
def _analyze_impl(fctx):
    print("analyzing", fctx.args.repo)
    return {"repo": fctx.args.repo, "issues": 3}

def _save_impl(fctx):
    print("saving")
    return "saved {}".format(fctx.args.report["issues"])

def _report_impl(fctx):
    print("reporting")
    return "reported {}".format(fctx.args.report["repo"])

analyze = flow(implementation = _analyze_impl, args = {"repo": args.string()})
save = flow(implementation = _save_impl)
report = flow(implementation = _report_impl)

if __name__ == "__flow__":
    result = unwrap(analyze(repo = "flowmetal"))
    a = fctx().actions
    tasks = [a.run(save, report = result), a.run(report, report = result)]
    results = a.wait(tasks)
    print(", ".join([unwrap(r) for r in results]))
"""


def test_seed_hello_streams_and_exits_zero(grid: Grid) -> None:
    script = grid.write("hello.flow", HELLO)
    done = grid.cli("run", "--context=local", str(script))
    assert done.returncode == 0, done.stderr
    import getpass

    assert done.stdout == f"Hello from Flowmetal, {getpass.getuser()}!\n"


def test_seed_parallel_prefixes_children(grid: Grid) -> None:
    script = grid.write("parallel.flow", PARALLEL)
    done = grid.cli("run", "--context=default", str(script))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "analyze | analyzing flowmetal" in lines
    assert "save | saving" in lines and "report | reporting" in lines
    assert lines[-1] == "saved 3, reported flowmetal"


def test_failure_exits_one_with_chained_traceback(grid: Grid) -> None:
    script = grid.write("boom.flow", """
        def _child_impl(fctx):
            fail("the child broke")

        child = flow(implementation = _child_impl)

        if __name__ == "__flow__":
            child()
    """)
    done = grid.cli("run", str(script))
    assert done.returncode == 1
    assert "the child broke" in done.stderr
    assert "boom.flow:2" in done.stderr  # the child's frame
    assert "boom.flow:7" in done.stderr  # the caller's frame
    assert "Traceback (most recent call last)" not in done.stderr.split("Caused by")[0].split("\n")[0]


def test_bundle_errors_exit_two_without_traceback(grid: Grid) -> None:
    script = grid.write("bad.flow", "def broken(:\n    pass\n")
    done = grid.cli("run", str(script))
    assert done.returncode == 2
    assert "bad.flow:1" in done.stderr
    assert "Traceback" not in done.stderr


def test_arguments_detach_ps_inspect_logs(grid: Grid) -> None:
    script = grid.write("args.flow", """
        if __name__ == "__flow__":
            print("n =", fctx().args.n, "name =", fctx().args.name)
    """)
    done = grid.cli("run", "--detach", "--arg", "n=3", "--arg", "name=world", str(script))
    assert done.returncode == 0, done.stderr
    flow_id = done.stdout.strip()
    flow = grid.wait(flow_id)
    assert flow["status"] == "completed"
    listing: list[dict[str, Any]] = json.loads(grid.cli("ps", "--all", "--json").stdout)
    mine = [f for f in listing if f["id"] == flow_id]
    assert mine and {"id", "parent", "root", "flow", "status", "quota", "created"} <= set(mine[0])
    inspected = json.loads(grid.cli("inspect", "--json", flow_id).stdout)
    assert inspected["status"] == "completed"
    assert [e["kind"] for e in inspected["journal"]] == ["print"]
    logs = grid.cli("logs", flow_id)
    assert logs.stdout == "n = 3 name = world\n"


def test_send_reaches_a_waiting_flow(grid: Grid) -> None:
    script = grid.write("inbox.flow", """
        if __name__ == "__flow__":
            first = fctx().actions.receive()
            second = fctx().actions.receive(inbox = "other")
            print("got", first["n"], second)
    """)
    flow_id = grid.cli("run", "--detach", str(script)).stdout.strip()
    assert grid.cli("send", "--inbox", "other", flow_id, '"second"').returncode == 0
    assert grid.cli("send", flow_id, '{"n": 1}').returncode == 0
    flow = grid.wait(flow_id)
    assert flow["status"] == "completed", flow
    assert grid.cli("logs", flow_id).stdout == "got 1 second\n"


def test_cancel_stops_flow_and_children(grid: Grid) -> None:
    script = grid.write("long.flow", """
        def _sleeper_impl(fctx):
            fctx.actions.sleep(60)

        sleeper = flow(implementation = _sleeper_impl)

        if __name__ == "__flow__":
            sleeper()
    """)
    flow_id = grid.cli("run", "--detach", str(script)).stdout.strip()
    for _ in range(100):
        children = [f for f in grid.client.list_flows() if f["parent"] == flow_id]
        if children:
            break
        import time

        time.sleep(0.05)
    done = grid.cli("cancel", flow_id)
    assert done.returncode == 0, done.stderr
    assert grid.wait(flow_id)["status"] == "cancelled"
    assert all(f["status"] == "cancelled" for f in grid.client.list_flows() if f["root"] == flow_id)


def test_unreachable_context_exits_three(grid: Grid, tmp_path: Any) -> None:
    added = grid.cli("context", "add", "nowhere", "--url", "http://127.0.0.1:9")
    assert added.returncode == 0, added.stderr
    done = grid.cli("ps", "--context", "nowhere")
    assert done.returncode == 3
    assert "nowhere" in done.stderr and "Traceback" not in done.stderr


def test_writing_to_a_flows_stdout_is_logging(grid: Grid) -> None:
    script = grid.write("writer.flow", """
        if __name__ == "__flow__":
            a = fctx().actions
            print("printed")
            a.write(fctx().flow_id, "written to my own log", inbox = "_stdout")
            a.receive()
    """)
    flow_id = grid.cli("run", "--detach", str(script)).stdout.strip()
    import time

    deadline = time.monotonic() + 15
    while len(grid.logs(flow_id)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert grid.cli("send", "--inbox", "_stdout", flow_id, '"from outside"').returncode == 0
    assert grid.cli("send", "--string", flow_id, "done").returncode == 0
    assert grid.wait(flow_id)["status"] == "completed"
    assert grid.cli("logs", flow_id).stdout == "printed\nwritten to my own log\nfrom outside\n"
