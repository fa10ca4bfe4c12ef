"""The supervisor's promises: status, restarts with backoff, clean shutdown, reconnecting streams."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from grid_local.home import pid_alive
from tests.integration.conftest import Grid

ROLES = {"client-api", "worker-api", "worker", "connector:clock", "connector:http", "connector:inbox"}


def _status(grid: Grid) -> dict[str, Any]:
    done = grid.cli("grid", "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_status_restart_and_clean_shutdown(grid: Grid) -> None:
    status = _status(grid)
    assert status["url"] == grid.url and status["db"] == str(grid.paths.db)
    roles = [p["role"] for p in status["processes"]]
    assert ROLES <= set(roles) and roles.count("worker") == 2
    assert all(isinstance(p["pid"], int) and p["alive"] for p in status["processes"])

    http = next(p for p in status["processes"] if p["role"] == "connector:http")
    os.kill(http["pid"], signal.SIGKILL)
    for _ in range(200):
        again = next(p for p in _status(grid)["processes"] if p["role"] == "connector:http")
        if again["pid"] != http["pid"] and again["alive"]:
            break
        time.sleep(0.05)
    assert again["restarts"] == 1 and again["pid"] != http["pid"]
    log = (grid.paths.logs / "supervisor.log").read_text()
    assert f"http (pid {http['pid']}) exited" in log and "restarted http" in log

    pids = [p["pid"] for p in _status(grid)["processes"]]
    done = grid.cli("grid", "down")
    assert done.returncode == 0 and "grid down" in done.stdout
    assert not any(pid_alive(pid) for pid in pids), "a grid process outlived `grid down`"
    assert not grid.paths.state.exists() and not (grid.paths.home / "grid.lock").exists()
    assert grid.cli("grid", "status").returncode == 3


def test_run_stream_survives_a_grid_restart(grid: Grid) -> None:
    script = grid.write("slow.flow", """
        if __name__ == "__flow__":
            print("before")
            fctx().actions.sleep(3)
            print("after")
    """)
    runner = subprocess.Popen(
        [sys.executable, "-m", "flowmetal_cli", "run", str(script)], env=grid.env, cwd=grid.project,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert runner.stdout is not None
        assert runner.stdout.readline() == "before\n"
        assert grid.cli("grid", "down").returncode == 0
        time.sleep(0.5)
        assert grid.cli("grid", "up", "--workers", "1").returncode == 0
        grid.refresh()
        out, err = runner.communicate(timeout=60)
        assert runner.returncode == 0, err
        assert out == "after\n"
    finally:
        runner.kill()
        runner.wait()


def test_two_grids_side_by_side(grid: Grid, tmp_path: Any) -> None:
    other_home = tmp_path / "other-home"
    env = {**grid.env, "FLOWMETAL_HOME": str(other_home)}
    up = subprocess.run([sys.executable, "-m", "flowmetal_cli", "grid", "up", "--workers", "1"], env=env,
                        capture_output=True, text=True, timeout=60)
    try:
        assert up.returncode == 0, up.stderr
        other = json.loads(subprocess.run([sys.executable, "-m", "flowmetal_cli", "grid", "status", "--json"],
                                          env=env, capture_output=True, text=True, timeout=60).stdout)
        assert other["url"] != grid.url and other["db"] != str(grid.paths.db)
        assert other["url"].startswith("http://127.0.0.1:")
    finally:
        subprocess.run([sys.executable, "-m", "flowmetal_cli", "grid", "down"], env=env, capture_output=True,
                       timeout=60)


def test_two_runs_racing_to_start_the_grid_share_one(tmp_path: Any) -> None:
    from grid_local.home import GridPaths
    from tests.integration.conftest import grid_env, stop_grid

    env = grid_env(tmp_path)
    script = tmp_path / "hi.flow"
    script.write_text('print("hi")\n')
    paths = GridPaths(tmp_path / "home")
    try:
        runs = [subprocess.Popen([sys.executable, "-m", "flowmetal_cli", "run", str(script)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outcomes = [run.communicate(timeout=90) for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outcomes
        assert [out for out, _ in outcomes] == ["hi\n", "hi\n"]
        assert sum("started a local grid" in err for _, err in outcomes) == 1
        state = paths.read_state()
        assert state is not None and pid_alive(state["pid"])
    finally:
        stop_grid(paths)
