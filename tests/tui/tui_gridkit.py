"""A real local grid for the TUI tests (and the recorder): started under a temporary home, always stopped."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from flowmetal_cli.bundle import build_bundle
from flowmetal_cli.client import GridClient
from grid_local.home import GridPaths
from grid_local.supervisor import start_background, stop_background

FLOWS = Path(__file__).parent / "flows"


class LocalGrid:
    def __init__(self, paths: GridPaths, url: str) -> None:
        self.paths = paths
        self.url = url
        self.client = GridClient(url, context="local")

    def start(self, script: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        built = build_bundle(FLOWS / script)
        self.client.upload_bundle(built.data, built.digest)
        return self.client.start_flow(built.digest, args or {}, name=script)

    def flow(self, flow_id: str) -> dict[str, Any]:
        return self.client.get_flow(flow_id)

    def wait_flow(self, flow_id: str, statuses: tuple[str, ...], timeout: float = 20.0) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def reached() -> bool:
            found.update(self.flow(flow_id))
            return found.get("status") in statuses

        wait_until(reached, timeout, f"flow {flow_id} to be {'/'.join(statuses)}")
        return found


async def until(pilot: Pilot[Any], condition: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    """Let the app run until ``condition()`` holds; fail after ``timeout`` seconds (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            shown = [n.message for n in pilot.app._notifications][-5:]
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} "
                                 f"(reports: {getattr(pilot.app, 'reports', [])[-5:]}, notifications: {shown})")
        await pilot.pause(0.05)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition (for code outside the app; Pilot tests poll with ``pilot.pause``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def local_grid(home: Path, workers: int = 2) -> Iterator[LocalGrid]:
    """Start a grid under ``home`` ($FLOWMETAL_HOME must point there) and stop it whatever happens."""
    paths = GridPaths(home)
    try:
        try:
            state = start_background(paths, workers=workers)
        except RuntimeError:  # a port taken between choosing and binding it: once more, on fresh ports
            stop_background(paths)
            state = start_background(paths, workers=workers)
        grid = LocalGrid(paths, str(state["url"]))
        try:
            yield grid
        finally:
            grid.client.close()
    finally:
        stop_background(paths)
