"""A grid that starts again knows nothing of the old one survived, and checks what it finds on disk
before trusting it: grid.json's pid, and the Flow DB."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from grid_local.db.store import FlowStore
from grid_local.home import GridPaths, pid_alive
from grid_local.runtime.journal import INTERRUPTED
from tests.integration.conftest import CountingServer, Grid, grid_env, stop_grid

RETRIES_HTTP = """
if __name__ == "__flow__":
    r = retry(lambda: fctx().actions.http("GET", fctx().args.url, timeout = 30, check = False),
              limit = 3, backoff = 0.1)()
    print("status", r.status, "count", r.json["count"])
"""


def _kill(grid: Grid, which: str) -> None:
    """SIGKILL the supervisor alone (its children die with it) or every process of the grid at once."""
    state = grid.paths.read_state()
    assert state is not None
    pids = [p["pid"] for p in state["processes"]]
    for pid in pids if which == "everything" else [state["pid"]]:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while any(pid_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "a grid process outlived the SIGKILL"
        time.sleep(0.02)


@pytest.mark.parametrize("which", ["everything", "supervisor"])
def test_restart_declares_requests_in_flight_interrupted_at_once(
    grid: Grid, http_server: CountingServer, which: str
) -> None:
    http_server.slow_seconds = 60
    flow_id = grid.start(grid.write("slow.flow", RETRIES_HTTP), {"url": f"{http_server.url}/slow-once"})
    assert http_server.arrived.wait(20), "the request never reached the server"
    http_server.slow_seconds = 0
    _kill(grid, which)

    began = time.monotonic()
    up = grid.cli("grid", "up", "--workers", "2")
    assert up.returncode == 0, up.stderr
    print(f"grid up took {time.monotonic() - began:.2f} s")
    grid.refresh()
    # Declared at start, before `grid up` returns: not when the dead connector's lease (30 s + 5 s) expires.
    first = grid.client.get_flow(flow_id)["journal"][0]
    assert first["kind"] == "http" and first["result"] is not None, "the request in flight is still open"
    assert first["result"]["error"] == INTERRUPTED
    flow = grid.wait(flow_id, timeout=30)
    print(f"recovered in {time.monotonic() - began:.2f} s after the SIGKILL of {which}")
    assert flow["status"] == "completed", flow["error"]
    assert grid.logs(flow_id) == ["status 200 count 2"]
    https = [e for e in grid.client.get_flow(flow_id)["journal"] if e["kind"] == "http"]
    assert len(https) == 2 and https[1]["result"]["ok"]
    assert http_server.count("/slow-once") == 2  # the interrupted attempt and the retry, nothing more


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowmetal_cli", *args], env=env, capture_output=True, text=True,
                          timeout=90)


def _stale_state(paths: GridPaths, pid: int) -> None:
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.state.write_text(json.dumps({
        "status": "ready", "pid": pid, "url": "http://127.0.0.1:9", "worker_url": "http://127.0.0.1:9",
        "db": str(paths.db), "home": str(paths.home), "auth": False,
        "processes": [{"role": "supervisor", "name": "supervisor", "pid": pid, "id": "supervisor"}],
    }))


def test_stale_grid_json_naming_an_unrelated_process(tmp_path: Path) -> None:
    env = grid_env(tmp_path)
    paths = GridPaths(Path(env["FLOWMETAL_HOME"]))
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        _stale_state(paths, bystander.pid)
        assert _cli(env, "grid", "status").returncode == 3
        up = _cli(env, "grid", "up", "--workers", "1")
        assert up.returncode == 0, up.stderr
        assert "already running" not in up.stdout and "grid up at" in up.stdout
        state = paths.read_state()
        assert state is not None and state["pid"] != bystander.pid and pid_alive(state["pid"])
        down = _cli(env, "grid", "down")
        assert down.returncode == 0 and "grid down" in down.stdout
        assert not pid_alive(state["pid"])

        _stale_state(paths, bystander.pid)
        down = _cli(env, "grid", "down")
        assert down.returncode == 0 and "no grid was running" in down.stdout
        assert not paths.state.exists(), "the stale grid.json was left behind"
        assert bystander.poll() is None, "grid down signalled a process that is not its supervisor"
    finally:
        bystander.kill()
        bystander.wait()
        stop_grid(paths)


def _flow_db(path: Path) -> int:
    """A real Flow DB of about 100 pages (schema and events), checkpointed; returns its page count."""
    async def create() -> None:
        store = await FlowStore.open(path)
        await store.close()

    asyncio.run(create())
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO events (flow_id, root, kind, data, at) VALUES ('f', 'f', 'log', ?, 0)",
                       [(f"line {n} " + "x" * 60,) for n in range(3000)])
    db.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path.stat().st_size // 4096


def _garbage(path: Path) -> str:
    path.write_bytes(b"this is not a database " * 1000)
    return "file is not a database"


def _truncated(path: Path) -> str:
    pages = _flow_db(path)
    os.truncate(path, pages // 2 * 4096)
    return "malformed"


def _damaged_in_the_middle(path: Path) -> str:
    pages = _flow_db(path)
    with open(path, "r+b") as db:
        db.seek(pages // 2 * 4096)
        db.write(b"\xff" * 4096)
    return "malformed"


@pytest.mark.parametrize("damage", [_garbage, _truncated, _damaged_in_the_middle])
def test_grid_up_refuses_a_damaged_flow_db_at_once(tmp_path: Path, damage: Any) -> None:
    env = grid_env(tmp_path)
    paths = GridPaths(Path(env["FLOWMETAL_HOME"]))
    paths.home.mkdir(parents=True)
    cause = damage(paths.db)
    try:
        up = _cli(env, "grid", "up", "--workers", "1")
        assert up.returncode == 3, up.stdout
        lines = up.stderr.strip().splitlines()
        assert len(lines) == 1, up.stderr
        assert str(paths.db) in lines[0] and cause in lines[0], lines[0]
        assert "did not start within" not in lines[0]
        assert paths.read_state() is None
    finally:
        stop_grid(paths)


def test_grid_up_names_the_cause_when_a_process_cannot_start(tmp_path: Path) -> None:
    env = grid_env(tmp_path)
    paths = GridPaths(Path(env["FLOWMETAL_HOME"]))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            up = _cli(env, "grid", "up", "--workers", "1", "--listen", f"127.0.0.1:{port}")
            assert up.returncode == 3, up.stdout
            lines = up.stderr.strip().splitlines()
            assert len(lines) == 1, up.stderr
            assert "client-api" in lines[0] and "address already in use" in lines[0], lines[0]
            assert paths.read_state() is None
        finally:
            stop_grid(paths)
