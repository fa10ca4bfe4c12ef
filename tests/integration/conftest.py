"""A real local grid per test: separate processes over a SQLite file under tmp_path, on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowmetal_cli.bundle import build_bundle
from flowmetal_cli.client import GridClient
from grid_local.home import GridPaths, pid_alive
from grid_local.supervisor import start_background, stop_background
from grid_local.worker.settings import WorkerSettings
from tests.helpers import LoopbackServer, QuietJsonHandler, write_file
from tests.integration.docker_engine import docker_engine  # noqa: F401  (a session fixture)

FINISHED = ("completed", "failed", "cancelled")


class Grid:
    def __init__(self, paths: GridPaths, state: dict[str, Any], env: dict[str, str], project: Path) -> None:
        self.paths = paths
        self.state = state
        self.env = env
        self.project = project
        self.client = GridClient(state["url"])

    @property
    def url(self) -> str:
        return str(self.state["url"])

    def write(self, path: str, source: str) -> Path:
        return write_file(self.project, path, source)

    def start(self, script: Path, args: dict[str, Any] | None = None) -> str:
        built = build_bundle(script)
        if not self.client.has_bundle(built.digest):
            self.client.upload_bundle(built.data, built.digest)
        return str(self.client.start_flow(built.digest, args or {}, name=script.name)["id"])

    def wait(self, flow_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            flow = self.client.get_flow(flow_id)
            if flow["status"] in FINISHED:
                return flow
            time.sleep(0.05)
        raise AssertionError(f"flow {flow_id} did not finish within {timeout} s: {self.client.get_flow(flow_id)}")

    def logs(self, root: str) -> list[str]:
        """Every line the flow tree printed, in order."""
        lines: list[str] = []
        cursor = 0
        while True:
            page = self.client.events(after=cursor, root=root)
            if not page["events"]:
                return lines
            cursor = page["cursor"]
            lines += [e["text"] for e in page["events"] if e["type"] == "log"]

    def processes(self, role: str) -> list[dict[str, Any]]:
        return [p for p in self.client.processes() if p["role"] == role and p["alive"]]

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flowmetal_cli", *args], env=self.env, capture_output=True, text=True,
            timeout=timeout, cwd=self.project,
        )

    def refresh(self) -> None:
        state = self.paths.read_state()
        assert state is not None
        self.state = state
        self.client.close()
        self.client = GridClient(state["url"])


def grid_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "FLOWMETAL_HOME": str(tmp_path / "home"), "FLOWMETAL_CONFIG": str(tmp_path / "config.toml"),
            "FLOWMETAL_CONTEXT": "local"}


def stop_grid(paths: GridPaths) -> None:
    """Stop the grid, and make sure: kill the supervisor (its children die with it) if it lingers."""
    state = paths.read_state()
    try:
        stop_background(paths, timeout=10)
    finally:
        if state and pid_alive(state.get("pid")):
            os.kill(state["pid"], signal.SIGKILL)
        for process in (state or {}).get("processes", []):
            if pid_alive(process.get("pid")):
                os.kill(process["pid"], signal.SIGKILL)


@pytest.fixture
def grid_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    env = grid_env(tmp_path)
    for key in ("FLOWMETAL_HOME", "FLOWMETAL_CONFIG", "FLOWMETAL_CONTEXT"):
        monkeypatch.setenv(key, env[key])
    paths = GridPaths(Path(env["FLOWMETAL_HOME"]))
    project = tmp_path / "project"
    project.mkdir()
    (project / "flowmetal.toml").write_text('[project]\nname = "it"\n')
    started: list[Grid] = []

    def start(workers: int = 2, extra_env: dict[str, str] | None = None,
              worker_settings: WorkerSettings | None = None, sandbox: str = "auto") -> Grid:
        for key, value in (extra_env or {}).items():
            monkeypatch.setenv(key, value)
        state = start_background(paths, workers=workers, worker_settings=worker_settings, sandbox=sandbox)
        grid = Grid(paths, state, {**env, **(extra_env or {})}, project)
        started.append(grid)
        return grid

    try:
        yield start
    finally:
        for grid in started:
            grid.client.close()
        stop_grid(paths)


@pytest.fixture
def grid(grid_factory: Any) -> Grid:
    return grid_factory()


class CountingServer(LoopbackServer):
    """A loopback HTTP server that counts requests per path; ``/slow`` holds the response for a while."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.slow_seconds = 3.0
        self.arrived = threading.Event()
        outer = self

        class Handler(QuietJsonHandler):
            def do_GET(self) -> None:  # noqa: N802
                self._answer()

            def do_POST(self) -> None:  # noqa: N802
                self._answer()

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                with outer.lock:
                    outer.counts[path] = outer.counts.get(path, 0) + 1
                    count = outer.counts[path]
                if path.startswith("/slow"):
                    outer.arrived.set()
                    time.sleep(outer.slow_seconds)
                if path.startswith("/fail-first") and count == 1:
                    self.send_response(503)
                    self.end_headers()
                    return
                self.send_json(200, {"path": path, "count": count, "body": body.decode() or None})

        super().__init__(Handler)

    def count(self, path: str) -> int:
        with self.lock:
            return self.counts.get(path, 0)


@pytest.fixture
def http_server() -> Iterator[CountingServer]:
    server = CountingServer()
    try:
        yield server
    finally:
        server.close()
