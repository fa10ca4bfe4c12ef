"""docker.container on a real Docker Engine: opened, used, closed however the flow ends, and never leaked.

Every test but the last needs an engine and the test image (``docker_engine``); the grid's
containers are looked up by its label, and removed after each test even when it fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from grid_local.connectors.containers import LABEL_FLOW, LABEL_GRID, LABEL_RESOURCE, grid_label
from grid_local.home import pid_alive
from grid_local.runtime.journal import INTERRUPTED
from tests.integration.conftest import Grid
from tests.integration.docker_engine import Engine


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def docker_grid(grid_factory: Any, docker_engine: Engine) -> Iterator[Grid]:
    grid: Grid = grid_factory()
    try:
        yield grid
    finally:
        docker_engine.remove_all_of(grid.paths.home)  # a failing test leaves nothing behind either


def child_of(grid: Grid, root: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        children = [f for f in grid.client.list_flows(root=root) if f["parent"] == root]
        return grid.client.get_flow(children[0]["id"]) if children else None
    return wait_until(found, what="the child flow")


def journal_of(grid: Grid, flow_id: str) -> list[dict[str, Any]]:
    return list(grid.client.get_flow(flow_id)["journal"])


def wait_for_entry(grid: Grid, flow_id: str, test: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    return wait_until(lambda: next((e for e in journal_of(grid, flow_id) if test(e)), None), what=what)


def no_containers_left(engine: Engine, grid: Grid) -> None:
    wait_until(lambda: not engine.containers_of(grid.paths.home), what="the grid's containers to be removed")


SHAPE = """
load("pkg.flowmetal.io/docker/v1", "docker")
load("pkg.flowmetal.io/workspace/v1", "workspace", "exec")

def _job_impl(fctx):
    box, ws = fctx.resources.box, fctx.resources.ws
    fctx.actions.receive(inbox = "go", timeout = 30)  # the test looks at the container meanwhile
    exec(ws, "sh", "-c", "echo from-host > in.txt")
    r = docker.exec(box, ["sh", "-c", "cat /src/in.txt; echo $GREETING $EXTRA; pwd; echo to-stderr >&2"],
                    env = {"EXTRA": "there"}, stream = True)
    docker.exec(box, ["sh", "-c", "echo from-container > /src/out.txt"])
    back = exec(ws, "cat", "out.txt").stdout.strip()
    ro = docker.exec(box, ["sh", "-c", "echo x > /ro/denied"])
    failing = docker.exec(box, ["sh", "-c", "exit 3"])
    missing = docker.exec(box, ["no-such-tool"], check = False)
    slow = docker.exec(box, ["sleep", "30"], timeout = 1, check = False)
    left = docker.exec(box, ["sh", "-c", "ps | grep -c '[s]leep 30' || true"]).stdout.strip()
    return {"stdout": r.stdout, "stderr": r.stderr, "back": back, "ro": ro.exit_code, "failing": failing.exit_code,
            "missing": missing.error, "slow": slow.error, "left": left}

job = flow(implementation = _job_impl, resources = {
    "ws": lambda fctx: workspace(),
    "box": lambda fctx: docker.container(
        image = fctx.args.image, env = {"GREETING": "hello"}, workdir = "/work", memory = "64m", cpus = 0.5,
        pids = 64, mounts = [docker.mount("ws", "/src"), docker.mount("ws", "/ro", read_only = True)]),
})

if __name__ == "__flow__":
    print(json.encode(job(image = fctx().args.image)))
"""


def test_open_exec_close(docker_grid: Grid, docker_engine: Engine) -> None:
    grid = docker_grid
    root = grid.start(grid.write("shape.flow", SHAPE), {"image": docker_engine.image})
    child = child_of(grid, root)
    wait_for_entry(grid, child["id"], lambda e: e["kind"] == "receive", "the job to wait")
    [container] = docker_engine.containers_of(grid.paths.home)
    labels = container.labels
    assert (labels[LABEL_GRID], labels[LABEL_FLOW], labels[LABEL_RESOURCE]) == (
        grid_label(grid.paths.home), child["id"], "box")
    host = container.attrs["HostConfig"]
    assert host["Init"] is True and host["NetworkMode"] == "none"
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (64 * 1024 * 1024, 500_000_000, 64)
    opened = [e for e in journal_of(grid, child["id"]) if e["kind"] == "open"]
    assert [e["args"]["name"] for e in opened] == ["box", "ws"]
    assert opened[0]["result"]["value"]["id"] == container.id[:12]
    grid.client.send(child["id"], "go", inbox="go")

    assert grid.wait(root)["status"] == "completed"
    result = json.loads(grid.logs(root)[-1])
    assert result["stdout"] == "from-host\nhello there\n/work\n" and result["stderr"] == "to-stderr\n"
    assert result["back"] == "from-container"
    assert result["ro"] != 0, "a read-only mount was written to"
    assert result["failing"] == 3
    assert result["missing"] == "docker.exec: command not found: no-such-tool"
    assert result["slow"] == "docker.exec: sleep timed out after 1 s (its processes were killed)"
    assert result["left"] == "0", "the timed-out command was left running"
    logged = grid.logs(root)
    assert "from-host" in logged and "to-stderr" in logged, "stream = True sends the output to the flow's log"
    no_containers_left(docker_engine, grid)


SLOW_STEP = """
load("pkg.flowmetal.io/docker/v1", "docker")

# The first run of the step takes {first} s, any later one 1 s; both write "start", then "end".
STEP = ["sh", "-c", "echo start >> /tmp/runs; if mkdir /tmp/ran 2>/dev/null; then sleep {first}; else sleep 1; fi; "
        + "echo end >> /tmp/runs"]

def _job_impl(fctx):
    box = fctx.resources.box
    first = docker.exec(box, STEP, timeout = 60, check = False)
    if not first.ok:
        print("retrying:", first.error)
        docker.exec(box, STEP, timeout = 60)
    left = docker.exec(box, ["sh", "-c", "ps | grep -c '[s]leep {first}' || true"]).stdout.strip()
    return docker.exec(box, ["cat", "/tmp/runs"]).stdout.replace("\\n", " ").strip() + " | left running: " + left

job = flow(implementation = _job_impl, resources = {"box": lambda fctx: docker.container(image = fctx.args.image)})

if __name__ == "__flow__":
    print(job(image = fctx().args.image))
"""


def _in_first_step(grid: Grid, engine: Engine, root: str) -> tuple[dict[str, Any], Any]:
    child = child_of(grid, root)
    wait_for_entry(grid, child["id"], lambda e: e["kind"] == "exec", "the first exec")
    [container] = wait_until(lambda: engine.containers_of(grid.paths.home), what="the container")
    def started() -> bool:
        return b"start" in container.exec_run(["cat", "/tmp/runs"]).output

    wait_until(started, what="the step to start")
    child = grid.client.get_flow(child["id"])
    assert child["worker"], child
    return child, container


def test_worker_sigkilled_mid_exec_resumes_in_the_same_container(docker_grid: Grid, docker_engine: Engine) -> None:
    grid = docker_grid
    root = grid.start(grid.write("step.flow", SLOW_STEP.replace("{first}", "3")), {"image": docker_engine.image})
    child, container = _in_first_step(grid, docker_engine, root)
    os.kill(int(child["worker"].rsplit(".", 1)[1]), signal.SIGKILL)
    assert grid.wait(root)["status"] == "completed"
    assert grid.logs(root) == ["start end | left running: 0"], "the exec ran once; its result reached the resumed flow"
    execs = [e for e in journal_of(grid, child["id"]) if e["kind"] == "exec"]
    assert len(execs) == 3 and execs[0]["result"]["ok"]
    assert journal_of(grid, child["id"])[-1]["worker"] != child["worker"], "it finished on another worker"
    no_containers_left(docker_engine, grid)


def test_executor_sigkilled_mid_exec_is_interrupted_killed_and_retried(docker_grid: Grid, docker_engine: Engine) -> None:
    grid = docker_grid
    root = grid.start(grid.write("step.flow", SLOW_STEP.replace("{first}", "60")), {"image": docker_engine.image})
    child, container = _in_first_step(grid, docker_engine, root)
    connector = grid.processes("connector:resources")[0]
    os.kill(int(child["worker"].rsplit(".", 1)[1]), signal.SIGKILL)
    os.kill(connector["pid"], signal.SIGKILL)
    assert grid.wait(root)["status"] == "completed"
    # Both runs wrote "start" in the same container, only the retry wrote "end", and the first run's
    # processes were killed before the retry began (its 60 s sleep is not running any more).
    assert grid.logs(root) == [f"retrying: {INTERRUPTED}", "start start end | left running: 0"]
    journal = journal_of(grid, child["id"])
    execs = [e for e in journal if e["kind"] == "exec"]
    assert execs[0]["result"]["error"] == INTERRUPTED and len(execs) == 4
    assert [e["args"]["text"] for e in journal if e["kind"] == "print"] == [f"retrying: {INTERRUPTED}"]
    assert [c.id for c in docker_engine.containers_of(grid.paths.home)] in ([container.id], [])
    no_containers_left(docker_engine, grid)


LONG_EXEC = """
load("pkg.flowmetal.io/docker/v1", "docker")

def _job_impl(fctx):
    return docker.exec(fctx.resources.box, ["sh", "-c", "echo working; sleep 60"], timeout = 120, stream = True)

job = flow(implementation = _job_impl, resources = {"box": lambda fctx: docker.container(image = fctx.args.image)})

if __name__ == "__flow__":
    job(image = fctx().args.image)
"""


def test_cancel_mid_exec_removes_the_container(docker_grid: Grid, docker_engine: Engine) -> None:
    grid = docker_grid
    root = grid.start(grid.write("long.flow", LONG_EXEC), {"image": docker_engine.image})
    child = child_of(grid, root)
    wait_until(lambda: "working" in grid.logs(root), what="the streamed line")
    assert docker_engine.containers_of(grid.paths.home)
    assert grid.cli("cancel", root).returncode == 0
    assert grid.wait(root)["status"] == "cancelled"
    no_containers_left(docker_engine, grid)


RUNAWAY = """
load("pkg.flowmetal.io/docker/v1", "docker")

def _job_impl(fctx):
    docker.exec(fctx.resources.box, ["true"])
    total = 0
    for i in range(1000000000):  # never reaches another action: the evaluation budget stops it
        total += i
    return total

job = flow(implementation = _job_impl, resources = {"box": lambda fctx: docker.container(image = fctx.args.image)})

if __name__ == "__flow__":
    job(image = fctx().args.image)
"""


def test_a_flow_stopped_by_its_limits_loses_its_container(docker_grid: Grid, docker_engine: Engine) -> None:
    grid = docker_grid
    grid.write("flowmetal.toml", '[project]\nname = "it"\n\n[limits]\neval_budget = 0.5\n')
    root = grid.start(grid.write("runaway.flow", RUNAWAY), {"image": docker_engine.image})
    child = child_of(grid, root)
    wait_for_entry(grid, child["id"], lambda e: e["kind"] == "exec" and e["result"], "the exec")
    flow = grid.wait(child["id"])
    assert flow["status"] == "failed" and "evaluation budget exceeded" in flow["error"]["message"]
    no_containers_left(docker_engine, grid)


DURABLE = """
load("pkg.flowmetal.io/docker/v1", "docker")

def _job_impl(fctx):
    box = fctx.resources.box
    docker.exec(box, ["sh", "-c", "echo kept > /tmp/state"])
    fctx.actions.receive(inbox = "go", timeout = 60)
    return docker.exec(box, ["sh", "-c", "cat /tmp/state 2>/dev/null || echo lost"]).stdout.strip()

job = flow(implementation = _job_impl, resources = {"box": lambda fctx: docker.container(image = fctx.args.image)})

if __name__ == "__flow__":
    print(job(image = fctx().args.image))
"""


def test_whole_grid_sigkilled_then_up_leaves_nothing(docker_grid: Grid, docker_engine: Engine) -> None:
    grid = docker_grid
    root = grid.start(grid.write("durable.flow", DURABLE), {"image": docker_engine.image})
    child = child_of(grid, root)
    wait_for_entry(grid, child["id"], lambda e: e["kind"] == "receive", "the job to wait")
    [container] = docker_engine.containers_of(grid.paths.home)
    # A container whose flow this grid never finished tracking (the Flow DB does not know it).
    stray = docker_engine.client.containers.create(
        docker_engine.image, ["sleep", "infinity"], labels={
            LABEL_GRID: grid_label(grid.paths.home), LABEL_FLOW: "0123456789ab", LABEL_RESOURCE: "box"})
    processes = grid.state["processes"]
    os.kill(grid.state["pid"], signal.SIGKILL)  # the supervisor; every child dies with it
    wait_until(lambda: not any(pid_alive(p["pid"]) for p in processes), what="every grid process to die")
    up = grid.cli("grid", "up", "--workers", "2")
    assert up.returncode == 0, up.stderr
    grid.refresh()
    wait_until(lambda: stray.id not in [c.id for c in docker_engine.containers_of(grid.paths.home)],
               what="the reaper to remove the stray container at grid start")
    assert [c.id for c in docker_engine.containers_of(grid.paths.home)] == [container.id]
    grid.client.send(child["id"], "go", inbox="go")
    assert grid.wait(root)["status"] == "completed"
    assert grid.logs(root) == ["kept"], "the resumed flow went on in the same container"
    no_containers_left(docker_engine, grid)


@pytest.mark.parametrize("mishap, seen, said", [
    ("removed", "lost", "its container was gone; reopened from the journaled spec"),
    ("stopped", "kept", "its container had stopped; started again"),
])
def test_a_container_removed_or_stopped_behind_the_flows_back_is_reopened(
    docker_grid: Grid, docker_engine: Engine, mishap: str, seen: str, said: str,
) -> None:
    grid = docker_grid
    root = grid.start(grid.write("durable.flow", DURABLE), {"image": docker_engine.image})
    child = child_of(grid, root)
    wait_for_entry(grid, child["id"], lambda e: e["kind"] == "receive", "the job to wait")
    [container] = docker_engine.containers_of(grid.paths.home)
    if mishap == "removed":
        container.remove(force=True)
    else:
        container.stop(timeout=1)
    grid.client.send(child["id"], "go", inbox="go")
    assert grid.wait(root)["status"] == "completed"
    # A new container from the same spec has none of the old one's files; a restarted one has them.
    assert grid.logs(root)[-1] == seen
    printed = [e["args"]["text"] for e in journal_of(grid, child["id"]) if e["kind"] == "print"]
    assert printed == [f"resource 'box': {said}"]
    no_containers_left(docker_engine, grid)


MISSING_IMAGE = """
load("pkg.flowmetal.io/docker/v1", "docker")

def _impl(fctx):
    return 1

boxed = flow(implementation = _impl, resources = {
    "box": lambda fctx: docker.container(image = fctx.args.image, memory = fctx.args.memory)})

if __name__ == "__flow__":
    boxed(image = fctx().args.image, memory = fctx().args.memory)
"""


@pytest.mark.parametrize("image, memory, said", [
    ("flowmetal-test/never-built:0", "64m", "image flowmetal-test/never-built:0 is not on the engine"),
    ("", "lots", "The specified value for memory (lots) should specify the units"),
])
def test_a_container_the_engine_cannot_make_fails_the_flow_clearly(
    docker_grid: Grid, docker_engine: Engine, image: str, memory: str, said: str,
) -> None:
    script = docker_grid.write("missing.flow", MISSING_IMAGE)
    done = docker_grid.cli("run", "--arg", f"image={image or docker_engine.image}", "--arg", f"memory={memory}",
                           str(script))
    assert done.returncode == 1
    first = done.stderr.splitlines()[0]
    assert f"cannot open resource 'box': docker.container: {said}" in first, done.stderr
    assert not docker_engine.containers_of(docker_grid.paths.home)


def test_engine_unreachable_fails_the_flow_with_one_line(grid_factory: Any) -> None:
    folder = Path(tempfile.mkdtemp(prefix="fm-docker-"))
    refusing = socket.socket(socket.AF_UNIX)
    refusing.bind(str(folder / "docker.sock"))  # bound, never listening: connections are refused
    try:
        engine = f"unix://{folder / 'docker.sock'}"
        grid: Grid = grid_factory(extra_env={"DOCKER_HOST": engine})
        script = grid.write("box.flow", """
            load("pkg.flowmetal.io/docker/v1", "docker")

            def _impl(fctx):
                return docker.exec(fctx.resources.box, ["true"]).exit_code

            boxed = flow(implementation = _impl, resources = {"box": lambda fctx: docker.container(image = "busybox")})

            if __name__ == "__flow__":
                boxed()
        """)
        done = grid.cli("run", str(script))
        assert done.returncode == 1
        line = f"docker.container needs a Docker Engine at {engine}: connection refused"
        assert done.stderr.splitlines()[0].endswith(line), done.stderr
        assert "Traceback (most recent call last):\n  File" not in done.stderr, "a Python traceback"
    finally:
        refusing.close()
        (folder / "docker.sock").unlink(missing_ok=True)
        folder.rmdir()


def test_the_seed_gha_workflow_runs_on_the_local_grid(docker_grid: Grid, docker_engine: Engine) -> None:
    example = Path(__file__).resolve().parents[1] / "fixtures" / "flows" / "seed" / "gha_workflow.flow"
    done = docker_grid.cli("run", "--arg", f"image={docker_engine.image}", "--arg", "ref=v1.2.3", str(example))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == ["job | build / compile: version=1.2.3", "job | build / compile: app",
                         "job | build / compile: config", "PASS build"]
    # test (a matrix of two) and lint need only build: they ran together, after it, before release.
    middle = lines[4:10]
    assert sorted(middle) == ["PASS lint", "PASS test (shard=1)", "PASS test (shard=2)",
                              "job | lint / lint: no lint errors",
                              "job | test (shard=1) / run tests: shard 1 of 2 passed (CI=true)",
                              "job | test (shard=2) / run tests: shard 2 of 2 passed (CI=true)"]
    assert lines[10:] == ["job | release / tag: tagged v1.2.3", "PASS release", "workflow ci: 4 jobs passed"]
    no_containers_left(docker_engine, docker_grid)
