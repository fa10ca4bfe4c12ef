"""A grid on "machine A" and processes started as on "machine B": shared by the remote-worker tests
and bench/bench_remote.py (it imports no pytest).

Machine B has its own FLOWMETAL_HOME and config and no grid credential in its environment; all it
shares with the grid is the Worker API URLs and a copy of the token file.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowmetal_cli.client import GridClient
from grid_local.api.worker_auth import TOKEN_ENV, TOKEN_FILE
from grid_local.home import GridPaths, pid_alive
from grid_local.layout import Layout
from grid_local.supervisor import start_background, stop_background


def machine_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "FLOWMETAL_HOME": str(home / "home"), "FLOWMETAL_CONFIG": str(home / "config.toml"),
           "FLOWMETAL_CONTEXT": "local", "PYTHONUNBUFFERED": "1"}
    env.pop(TOKEN_ENV, None)
    return env


@dataclass
class Spread:
    """A grid on machine A (its home) and processes started as on machine B (another home)."""

    tmp: Path
    paths: GridPaths
    state: dict[str, Any]
    env: dict[str, str]
    """Machine B's environment: its own FLOWMETAL_HOME and config, no grid credential in it."""
    token_file: Path
    project: Path
    started: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return list(self.state["worker_urls"])

    def start(self, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        """`flowmetal <args>` on machine B, its output in a log of its own."""
        log = self.tmp / f"machine-b-{len(self.started)}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "flowmetal_cli", *args], env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.tmp)
        self.started.append((process, log))
        return process, log

    def worker(self, name: str) -> tuple[subprocess.Popen[bytes], Path]:
        return self.start("worker", "--url", ",".join(self.urls), "--token-file", str(self.token_file),
                          "--name", name, "--slots", "16", "--worker-memory", "512")

    def connector(self, role: str) -> tuple[subprocess.Popen[bytes], Path]:
        return self.start("connector", role, "--url", ",".join(self.urls), "--token-file", str(self.token_file))

    def client(self) -> GridClient:
        return GridClient(self.state["url"])

    def grid_processes(self) -> list[dict[str, Any]]:
        state = self.paths.read_state()
        assert state is not None
        return list(state["processes"])


def wait_until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def remote_workers(spread: Spread, count: int) -> list[dict[str, Any]]:
    """Wait until the grid lists ``count`` workers it did not start (known from their Worker API calls)."""
    with spread.client() as client:
        return wait_until(lambda: (found := [p for p in client.processes() if p.get("remote")]) and
                          len(found) >= count and found, 60, f"{count} remote workers in /v1/processes")


def start_spread(tmp: Path, components: frozenset[str], workers: int = 0, worker_apis: int = 2) -> Spread:
    """Start the grid on machine A (``components``, ``worker_apis`` replicas); give machine B a copy
    of its token file."""
    grid_home = tmp / "machine-a"
    paths = GridPaths(grid_home)
    state = start_background(paths, workers=max(workers, 1), timeout=60,
                             layout=Layout(components=components, worker_apis=worker_apis))
    machine_b = tmp / "machine-b"
    machine_b.mkdir()
    token_file = machine_b / "worker-api.token"
    shutil.copy(grid_home / TOKEN_FILE, token_file)  # all that is shared, with the URLs
    project = tmp / "project"
    project.mkdir()
    (project / "flowmetal.toml").write_text('[project]\nname = "spread"\n')
    return Spread(tmp, paths, state, machine_env(machine_b), token_file, project)


def kill_replica(spread: Spread, name: str) -> dict[str, Any]:
    replica = next(p for p in spread.grid_processes() if p["name"] == name)
    os.kill(int(replica["pid"]), signal.SIGKILL)
    return replica


def stop_spread(spread: Spread) -> None:
    """Stop every process machine B started, then the grid (and whatever of it lingers)."""
    for process, _ in spread.started:
        if process.poll() is None:
            process.kill()
        process.wait(10)
    state = spread.paths.read_state()
    try:
        stop_background(spread.paths, timeout=10)
    finally:
        for known in (state or {}).get("processes", []):
            if pid_alive(known.get("pid")):
                os.kill(known["pid"], signal.SIGKILL)
