"""`flowmetal run --watch` against a real local grid, driven by real edits of the files it watches."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flowmetal_cli.watch import EXIT_INTERRUPTED, watch_and_run
from tests.integration.conftest import FINISHED, Grid

SCRIPT = """
load("//lib/text.star", "label")

if __name__ == "__flow__":
    print(label("{version}"))
    {tail}
"""
LONG = "fctx().actions.sleep(60)"
SHORT = 'print("done")'


def write_script(grid: Grid, version: str, tail: str = LONG) -> Path:
    return grid.write("watched.flow", SCRIPT.format(version=version, tail=tail))


def write_lib(grid: Grid, prefix: str) -> Path:
    return grid.write("lib/text.star", f'def label(version):\n    return "{prefix} " + version\n')


class Watching:
    """`flowmetal run --watch` as a subprocess, its output collected line by line as it comes."""

    def __init__(self, grid: Grid, script: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flowmetal_cli", "run", "--watch", str(script)],
            env={**grid.env, "PYTHONUNBUFFERED": "1"}, cwd=grid.project, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                        for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_for(self, lines: list[str], pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(lines):
                found = re.search(pattern, line)
                if found:
                    return found
            if self.process.poll() is not None and time.monotonic() > deadline - timeout + 1:
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not seen; stdout={self.stdout} stderr={self.stderr}")

    def interrupt(self, timeout: float = 20.0) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout)
        for reader in self.readers:
            reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def watching(grid: Grid) -> Iterator[Callable[[Path], Watching]]:
    started: list[Watching] = []

    def start(script: Path) -> Watching:
        started.append(Watching(grid, script))
        return started[-1]

    try:
        yield start
    finally:
        for watcher in started:
            watcher.kill()
        for flow in grid.client.list_flows():  # nothing left running on the grid either
            if flow["status"] not in FINISHED and flow["parent"] is None:
                grid.client.cancel(flow["id"])


def flow_of(watcher: Watching, run: int) -> str:
    return watcher.wait_for(watcher.stderr, rf"^\[watch\] run {run}: flow (\w+) ")[1]


def test_edits_rerun_and_cancel_the_previous_run(grid: Grid, watching: Callable[[Path], Watching]) -> None:
    write_lib(grid, "one")
    script = write_script(grid, "v1")
    watcher = watching(script)
    watcher.wait_for(watcher.stdout, r"^one v1$")
    first = flow_of(watcher, 1)

    write_script(grid, "v2")  # the script itself
    watcher.wait_for(watcher.stdout, r"^one v2$")
    second = flow_of(watcher, 2)
    assert grid.wait(first, timeout=10)["status"] == "cancelled"
    watcher.wait_for(watcher.stderr, rf"^\[watch\] changed: watched\.flow; cancelled run 1 \(flow {first}\)$")

    write_lib(grid, "two")  # a file it loads
    watcher.wait_for(watcher.stdout, r"^two v2$")
    assert grid.wait(second, timeout=10)["status"] == "cancelled"

    grid.write("lib/text.star", "def label(version) return\n")  # a bundle error: reported, then waits
    watcher.wait_for(watcher.stderr, r"^error: lib/text\.star:1:\d+: ")
    watcher.wait_for(watcher.stderr, r"the script has errors; waiting for a change")
    assert watcher.process.poll() is None
    write_lib(grid, "three")
    watcher.wait_for(watcher.stdout, r"^three v2$")
    last = flow_of(watcher, 5)

    assert watcher.interrupt() == EXIT_INTERRUPTED
    stderr = "\n".join(watcher.stderr)
    assert stderr.splitlines()[-1] == "[watch] stopped"
    assert "Traceback" not in stderr
    assert grid.wait(last, timeout=10)["status"] == "cancelled"  # Ctrl-C cancelled the running flow
    assert watcher.stdout == ["one v1", "one v2", "two v2", "three v2"]


def test_an_unrelated_file_does_not_rerun(grid: Grid, watching: Callable[[Path], Watching]) -> None:
    write_lib(grid, "one")
    script = write_script(grid, "v1", SHORT)
    watcher = watching(script)
    watcher.wait_for(watcher.stderr, r"^\[watch\] run 1 completed; waiting for a change")
    grid.write("notes.star", "x = 1\n")  # in the project, but the script does not load it
    grid.write("README.md", "hello\n")
    time.sleep(1.0)
    assert not any(line.startswith("[watch] run 2") for line in watcher.stderr), watcher.stderr
    write_script(grid, "v2", SHORT)
    watcher.wait_for(watcher.stderr, r"^\[watch\] run 2 completed; waiting for a change")  # all its output shown
    assert watcher.interrupt() == EXIT_INTERRUPTED
    assert watcher.stdout == ["one v1", "done", "one v2", "done"]


def test_a_missing_script_exits_two(grid: Grid) -> None:
    done = grid.cli("run", "--watch", "nowhere.flow")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: nowhere.flow: no such file"


def test_watch_and_run_in_a_thread_max_runs_and_stop(grid: Grid, capsys: pytest.CaptureFixture[str]) -> None:
    write_lib(grid, "one")
    script = write_script(grid, "v1", SHORT)
    outcome: list[int] = []
    thread = threading.Thread(target=lambda: outcome.append(watch_and_run(script, "local", {}, max_runs=2)),
                              daemon=True)
    thread.start()
    wait_until(lambda: [f for f in grid.client.list_flows() if f["status"] == "completed" and f["parent"] is None])
    write_script(grid, "v2", 'fail("v2 is broken")')
    thread.join(30)
    assert not thread.is_alive() and outcome == [1]  # the last run's exit code: it failed
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["one v1", "done", "one v2"]
    assert "v2 is broken" in captured.err

    stop = threading.Event()
    write_script(grid, "v3")
    thread = threading.Thread(target=lambda: outcome.append(watch_and_run(script, None, {}, stop=stop)), daemon=True)
    thread.start()
    running = wait_until(lambda: [f for f in grid.client.list_flows()
                                  if f["parent"] is None and f["status"] not in FINISHED])
    stop.set()
    thread.join(30)
    assert not thread.is_alive() and outcome[-1] == 0
    assert grid.wait(running[0]["id"], timeout=10)["status"] == "cancelled"


def wait_until(probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")

