"""The Flow DB's own failures, for real: a full disk (the Flow DB on a small tmpfs filled to the
last byte) and a database locked by another process.

The APIs answer 507 or 503 with a message naming the cause (never a bare 500) and write nothing;
a flow whose results land while the disk is full waits, and goes on when there is space again;
the database is intact afterwards."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from grid_local.bundle_format import write_bundle
from tests.integration.conftest import Grid, LoopbackServer, QuietJsonHandler

SCRIPT = """
if __name__ == "__flow__":
    a = fctx().actions
    r = a.http("GET", fctx().args.url)
    print("got", r.json["count"])
    print("x" * 1500000)  # more than the space given back first
    print("after")
"""


class Disk:
    """A tmpfs of its own, and a way to fill it up and give the space back."""

    def __init__(self, mount: Path) -> None:
        self.mount = mount
        self.fillers: list[Path] = []

    def fill(self, name: str, at_most: int | None = None) -> int:
        """Write zeros into a new file until the disk is full (or ``at_most`` bytes); returns its size."""
        path = self.mount / name
        self.fillers.append(path)
        written = 0
        with open(path, "wb", buffering=0) as filler:
            for chunk in (1024 * 1024, 4096, 512, 1):
                block = b"\0" * chunk
                while at_most is None or written + chunk <= at_most:
                    try:
                        filler.write(block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
                    written += chunk
        return written

    def free(self, name: str) -> None:
        (self.mount / name).unlink()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Disk]:
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for a real full disk needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield Disk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


class GatedServer(LoopbackServer):
    """Answers each request only once the test opens the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.arrived = threading.Event()
        self.count = 0
        outer = self

        class Handler(QuietJsonHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.count += 1
                outer.arrived.set()
                outer.gate.wait(60)
                self.send_json(200, {"count": outer.count})

        super().__init__(Handler)


def _wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _rows(db: Path, table: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        count = int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    connection.close()
    return count


def test_full_disk_is_507_and_the_flow_goes_on_when_space_is_back(small_disk: Disk, grid_factory: Any,
                                                                  tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "flow.db").symlink_to(small_disk.mount / "flow.db")  # SQLite keeps its -wal beside the target
    server = GatedServer()
    try:
        grid: Grid = grid_factory(workers=1)
        assert (small_disk.mount / "flow.db-wal").exists()
        flow_id = grid.start(grid.write("gated.flow", SCRIPT), {"url": f"{server.url}/gated"})
        assert server.arrived.wait(30), "the request never reached the server"
        data, digest = write_bundle("b.flow", {"b.flow": 'print("b")\n'}, {})
        grid.client.upload_bundle(data, digest)

        # Empty the WAL into the database file, then fill the disk: from here every write must grow a file.
        with sqlite3.connect(small_disk.mount / "flow.db", timeout=30) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        small_disk.fill("filler-first", at_most=512 * 1024)
        small_disk.fill("filler-rest")
        flows = _rows(small_disk.mount / "flow.db", "flows")

        with httpx.Client(base_url=grid.url) as api:
            for method, path, body in (("POST", "/v1/flows", {"bundle": digest}),
                                       ("POST", f"/v1/flows/{flow_id}/messages", {"value": "hello"})):
                response = api.request(method, path, json=body)
                assert response.status_code == 507, response.text
                answer = response.json()
                assert answer["error"] == "disk_full" and "disk is full" in answer["message"]
                assert str(grid.paths.db) in answer["message"]
        assert _rows(small_disk.mount / "flow.db", "flows") == flows

        # The connector's result lands on the full disk: refused, and retried rather than lost.
        server.gate.set()
        worker_api_log = grid.paths.logs / "worker-api.log"
        _wait_for(lambda: "/v1/connectors/results" in worker_api_log.read_text(errors="replace"),
                  "the connector's result never met the full disk")
        assert grid.client.get_flow(flow_id)["journal"][0]["result"] is None

        # Space for the result, not for the flow's 1.5 MB line: the worker's append waits too.
        small_disk.free("filler-first")
        _wait_for(lambda: grid.client.get_flow(flow_id)["journal"][0]["result"] is not None,
                  "the result was not recorded once there was space")
        _wait_for(lambda: "/journal: the Flow DB" in worker_api_log.read_text(errors="replace"),
                  "the worker's append never met the full disk")
        assert grid.client.get_flow(flow_id)["status"] not in ("completed", "failed")

        small_disk.free("filler-rest")
        flow = grid.wait(flow_id, timeout=60)
        assert flow["status"] == "completed", flow["error"]
        lines = grid.logs(flow_id)
        assert lines[0] == "got 1" and lines[-1] == "after" and len(lines) == 3
        assert server.count == 1, "the HTTP request was sent again"
        journal = grid.client.get_flow(flow_id)["journal"]
        assert [e["seq"] for e in journal] == list(range(1, len(journal) + 1))
        with sqlite3.connect(small_disk.mount / "flow.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        db.close()
    finally:
        server.gate.set()
        server.close()


def test_locked_flow_db_is_503_naming_the_cause(grid: Grid) -> None:
    data, digest = write_bundle("b.flow", {"b.flow": 'print("b")\n'}, {})
    grid.client.upload_bundle(data, digest)
    flows = _rows(grid.paths.db, "flows")
    holder = sqlite3.connect(grid.paths.db, isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock and does not let go
        with httpx.Client(base_url=grid.url, timeout=60) as api:
            response = api.post("/v1/flows", json={"bundle": digest})
            assert response.status_code == 503, response.text
            answer = response.json()
            assert answer["error"] == "db_locked" and "locked" in answer["message"]
            assert str(grid.paths.db) in answer["message"] and response.headers["retry-after"]
            holder.execute("ROLLBACK")
            assert _rows(grid.paths.db, "flows") == flows
            assert api.post("/v1/flows", json={"bundle": digest}).status_code == 201
    finally:
        holder.close()
