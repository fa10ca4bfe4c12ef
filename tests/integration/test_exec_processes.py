"""No process an exec started outlives its command or its flow: not after the flow, not after a
cancel, not after `grid down` (background jobs, a `setsid` escapee, one that holds the output pipe)."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Grid

BACKGROUND = """
load("pkg.flowmetal.io/workspace/v1", "workspace", "exec")

def _spawn_impl(fctx):
    ws = fctx.resources.ws
    pids = []
    # nohup with its output elsewhere; a setsid escapee (own session); one holding the output pipe.
    for line in ["nohup sleep 600 > /dev/null 2>&1 & echo $!", "setsid sleep 601 > /dev/null 2>&1 & echo $!",
                 "sleep 602 & echo $!"]:
        pids.append(exec(ws, "sh", "-c", line, timeout = 120).stdout.strip())
    return pids

spawn = flow(implementation = _spawn_impl, resources = {"ws": lambda fctx: workspace()})

if __name__ == "__flow__":
    print(" ".join(spawn()))
"""

HOLDING = """
load("pkg.flowmetal.io/workspace/v1", "workspace", "exec")

def _hold_impl(fctx):
    exec(fctx.resources.ws, "sh", "-c", "nohup sleep 603 > /dev/null 2>&1 & echo $! > bg.pid; echo $$ > fg.pid; sleep 604",
         timeout = 300)

hold = flow(implementation = _hold_impl, resources = {"ws": lambda fctx: workspace()})

if __name__ == "__flow__":
    hold()
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_dead(pids: list[int], timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        living = [pid for pid in pids if alive(pid)]
        if not living:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


def held_pids(grid: Grid, root: str) -> list[int]:
    """The pids the holding command wrote in its workspace, once both are there."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for folder in grid.paths.workspaces.glob("*/ws") if grid.paths.workspaces.exists() else []:
            files = [folder / "bg.pid", folder / "fg.pid"]
            texts = [f.read_text().strip() if f.exists() else "" for f in files]
            if all(texts):
                return [int(t) for t in texts]
        time.sleep(0.05)
    raise AssertionError(f"the command never wrote its pids: {grid.client.get_flow(root)}")


def test_background_processes_die_with_their_command(grid: Grid) -> None:
    flow_id = grid.start(grid.write("spawn.flow", BACKGROUND))
    started = time.monotonic()
    assert grid.wait(flow_id, timeout=120)["status"] == "completed"
    assert time.monotonic() - started < 100, "a background process holding the pipe kept exec waiting"
    pids = [int(p) for p in grid.logs(flow_id)[0].split()]
    assert len(pids) == 3
    assert wait_dead(pids) == [], "a process an exec started outlived its command"


def test_a_cancel_kills_what_the_running_command_started(grid: Grid) -> None:
    flow_id = grid.start(grid.write("hold.flow", HOLDING))
    pids = held_pids(grid, flow_id)
    assert all(alive(pid) for pid in pids)
    grid.client.cancel(flow_id)
    assert wait_dead(pids) == [], "the command, or what it started, outlived the cancelled flow"


def test_grid_down_kills_what_running_commands_started(grid: Grid) -> None:
    flow_id = grid.start(grid.write("hold.flow", HOLDING))
    pids = held_pids(grid, flow_id)
    assert grid.cli("grid", "down").returncode == 0
    assert wait_dead(pids) == [], "a process an exec started outlived the grid"


# The command leaves a nohup'd and a setsid'd process behind, and one that clears its environment (so
# has no exec mark) and leaves the session, then waits for the test to say "go"
# (a file in its workspace) before it ends normally; the test may instead cancel it or stop the grid.
LEAVES = """
load("pkg.flowmetal.io/workspace/v1", "workspace", "exec")

def _leave_impl(fctx):
    n = fctx.args.nonce
    exec(fctx.resources.ws, "sh", "-c",
         "nohup sleep 600." + n + "1 > /dev/null 2>&1 & setsid sleep 600." + n + "2 > /dev/null 2>&1 & " +
         "env -i setsid -f sleep 600." + n + "3 > /dev/null 2>&1; " +
         "while [ ! -e go ]; do sleep 0.05; done", timeout = 300)

leave = flow(implementation = _leave_impl, resources = {"ws": lambda fctx: workspace()})

if __name__ == "__flow__":
    leave(nonce = fctx().args.nonce)
    print("ended")
"""


def carrying(nonce: str) -> dict[int, str]:
    """Every process of this machine whose command line holds ``nonce`` (any pid namespace: /proc here
    shows them all), zombies aside."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if nonce.encode() in argv and alive(int(entry.name)):
            found[int(entry.name)] = argv.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def wait_for(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


@pytest.mark.parametrize("ending", ["ends", "cancel", "down"])
@pytest.mark.parametrize("sandbox", ["auto", "exec"], ids=["unsandboxed", "sandboxed"])
def test_nothing_an_exec_left_behind_outlives_it(grid_factory: Any, sandbox: str, ending: str) -> None:
    grid = grid_factory(sandbox=sandbox)
    assert grid.state["isolation"]["sandbox"] == ("exec" if sandbox == "exec" else "none")
    nonce = str(secrets.randbelow(10**9)).rjust(9, "0")
    flow_id = grid.start(grid.write("leaves.flow", LEAVES), {"nonce": nonce})

    def all_left() -> dict[int, str]:
        found = carrying(nonce)
        return found if sum(cmd.startswith("sleep 600.") for cmd in found.values()) == 3 else {}

    found = wait_for(all_left, f"the command started its three background sleeps: {grid.client.get_flow(flow_id)}")
    assert any(cmd.startswith("sh -c nohup") for cmd in found.values()), found
    assert any(cmd.startswith("/usr/bin/bwrap ") for cmd in found.values()) == (sandbox == "exec"), found
    if ending == "ends":
        workspace = wait_for(lambda: [p for p in grid.paths.workspaces.glob("*/ws")], "its workspace")
        (workspace[0] / "go").touch()
        flow = grid.wait(flow_id, timeout=60)
        assert flow["status"] == "completed" and grid.logs(flow_id) == ["ended"], flow
    elif ending == "cancel":
        grid.client.cancel(flow_id)
        assert grid.wait(flow_id)["status"] == "cancelled"
    else:
        assert grid.cli("grid", "down").returncode == 0
    deadline = time.monotonic() + 20
    while carrying(nonce) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert carrying(nonce) == {}, f"outlived its exec ({ending}, sandbox {sandbox}): {carrying(nonce)}"


QUICK_ESCAPE = """
load("pkg.flowmetal.io/workspace/v1", "workspace", "exec")

def _escape_impl(fctx):
    exec(fctx.resources.ws, "sh", "-c", "env -i setsid -f sleep 600." + fctx.args.nonce + "3 > /dev/null 2>&1")

escape = flow(implementation = _escape_impl, resources = {"ws": lambda fctx: workspace()})

if __name__ == "__flow__":
    escape(nonce = fctx().args.nonce)
"""


def test_a_leftover_without_its_mark_never_takes_a_running_command_s_processes(grid: Grid) -> None:
    """Unsandboxed: flow A's command runs (with its own leftovers) while flow B's command leaves an
    unmarked escapee and ends. B's end kills none of A's; once A ends, neither A's nor B's remain."""
    first, second = (str(secrets.randbelow(10**9)).rjust(9, "0") for _ in range(2))
    running = grid.start(grid.write("leaves.flow", LEAVES), {"nonce": first})
    wait_for(lambda: sum(c.startswith("sleep 600.") for c in carrying(first).values()) == 3, "A's three sleeps")
    quick = grid.start(grid.write("escape.flow", QUICK_ESCAPE), {"nonce": second})
    assert grid.wait(quick)["status"] == "completed"
    assert len(carrying(first)) == 4, carrying(first)  # A's sh and its three leftovers, untouched
    # B's workspace closes with B: then A's is the only one left.
    only = wait_for(lambda: len(found := list(grid.paths.workspaces.glob("*/ws"))) == 1 and found, "A's workspace")
    (only[0] / "go").touch()
    assert grid.wait(running, timeout=60)["status"] == "completed"
    deadline = time.monotonic() + 20
    while (carrying(first) or carrying(second)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (carrying(first), carrying(second)) == ({}, {})
