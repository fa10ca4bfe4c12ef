"""A grid state recorded from a real local grid, served back to a real ``GridClient`` for snapshot tests.

A snapshot must be the same on every run, and a live grid gives new flow ids, pids, ports and
times each time. So ``python tests/tui/tui_recorded.py`` runs the fixture flows on a real grid
(one resumed after its worker is killed, one failed by injection, one waiting, one with a child
and a failed receive) and records what the Client API answered. The snapshot tests serve that
record through ``httpx.MockTransport`` to the real client, and freeze the app's clock at the
recording's "now". The Pilot tests in ``test_tui_app.py`` are the ones that run a live grid.

``python tests/tui/tui_recorded.py quotas`` records the Quotas tab's state instead: a node with a
running limit of 1, one flow holding it and one pending behind it (``recorded/quota_state.json``).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from flowmetal_cli.client import GridClient

RECORDING = Path(__file__).parent / "recorded" / "grid_state.json"
QUOTA_RECORDING = Path(__file__).parent / "recorded" / "quota_state.json"


class RecordedGrid:
    """Answers the Client API's read calls from a recording; refuses every write."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.url = str(data["url"])
        self.now = float(data["now"])
        self.roles: dict[str, str] = data["roles"]

    @classmethod
    def load(cls, path: Path = RECORDING) -> "RecordedGrid":
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def client(self) -> GridClient:
        return GridClient(self.url, context="local", transport=httpx.MockTransport(self.handle))

    def handle(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")[1:]
        params = request.url.params
        if request.method == "GET" and parts == ["flows"]:
            return httpx.Response(200, json=self.data["flows"])
        if request.method == "GET" and parts == ["quota", "tree"] and "quota_tree" in self.data:
            return httpx.Response(200, json=self.data["quota_tree"])
        if request.method == "GET" and len(parts) == 2 and parts[0] == "flows":
            detail = self.data["details"].get(parts[1])
            return httpx.Response(200, json=detail) if detail else self._error(404, f"no flow {parts[1]}")
        if request.method == "GET" and parts == ["events"]:
            after, root = int(params.get("after", 0)), params.get("root")
            found = [e for e in self.data["events"] if e["id"] > after and (root is None or e["root"] == root)][:1000]
            if not found:
                time.sleep(min(float(params.get("wait", 0)), 0.1))  # a long poll that finds nothing new
            return httpx.Response(200, json={"events": found, "cursor": found[-1]["id"] if found else after})
        if request.method == "GET" and parts == ["processes"]:
            return httpx.Response(200, json={"processes": self.data["processes"]})
        if request.method in ("GET", "HEAD") and len(parts) == 2 and parts[0] == "bundles":
            bundle = self.data["bundles"].get(parts[1])
            if bundle is None:
                return self._error(404, f"no bundle {parts[1]}")
            return httpx.Response(200, content=base64.b64decode(bundle) if request.method == "GET" else b"")
        return self._error(405, "this recorded grid only answers reads")

    @staticmethod
    def _error(status: int, message: str) -> httpx.Response:
        return httpx.Response(status, json={"error": "recorded", "message": message})


def record(path: Path = RECORDING) -> None:
    """Run the fixture flows on a fresh local grid and write what its Client API answered."""
    with tempfile.TemporaryDirectory(prefix="flowmetal-record-") as temporary:
        os.environ["FLOWMETAL_HOME"] = str(Path(temporary) / "home")
        os.environ["FLOWMETAL_CONFIG"] = str(Path(temporary) / "config.toml")
        from tui_gridkit import local_grid, wait_until

        with local_grid(Path(temporary) / "home") as grid:
            client = grid.client
            steps = grid.start("steps.flow")
            grid.wait_flow(steps["id"], ("completed",))

            replayed = grid.start("sleepy.flow")
            held: dict[str, Any] = {}

            def held_with_entries() -> bool:
                held.update(grid.flow(replayed["id"]))
                return bool(held.get("worker")) and len(held.get("journal", [])) >= 3

            wait_until(held_with_entries, 20, "sleepy.flow to be held by a worker")
            victim = next(p for p in client.processes() if p.get("id") == held["worker"])
            client.kill(int(victim["pid"]))
            grid.wait_flow(replayed["id"], ("completed",), timeout=40)

            failed = grid.start("sleepy.flow")
            wait_until(lambda: len(grid.flow(failed["id"]).get("journal", [])) >= 2, 20, "a second sleepy.flow")
            client.inject(failed["id"], "fail")
            grid.wait_flow(failed["id"], ("failed",))

            waiter = grid.start("waiter.flow")
            grid.wait_flow(waiter["id"], ("waiting",))
            wait_until(lambda: all(p.get("alive") for p in client.processes()), 20, "every process to be up")

            data = capture(grid, {"steps": steps["id"], "replayed": replayed["id"], "failed": failed["id"],
                                  "waiter": waiter["id"], "killed": victim["id"]})
    write(data, path)


def capture(grid: Any, roles: dict[str, str], quotas: bool = False) -> dict[str, Any]:
    """What the Client API answers now: flows (with their reasons), details, events, processes, bundles."""
    client = grid.client
    flows = client.list_flows(why=True) if quotas else client.list_flows()
    details = {f["id"]: client.get_flow(f["id"]) for f in flows}
    events: list[dict[str, Any]] = []
    while True:
        page = client.events(after=events[-1]["id"] if events else 0)
        events.extend(page["events"])
        if len(page["events"]) < 1000:
            break
    bundles = {f["bundle"]: base64.b64encode(client.get_bundle(f["bundle"])).decode() for f in flows}
    data = {"url": grid.url, "now": max(e["at"] for e in events) + 2.0, "roles": roles, "flows": flows,
            "details": details, "events": events, "processes": client.processes(), "bundles": bundles}
    if quotas:
        data["quota_tree"] = client.quota_tree()
    return data


def write(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"recorded {len(data['flows'])} flows and {len(data['events'])} events to {path}")


def record_quotas(path: Path = QUOTA_RECORDING) -> None:
    """A node of the local user's subtree at its running limit: one flow holds it, one waits pending."""
    import getpass

    with tempfile.TemporaryDirectory(prefix="flowmetal-record-") as temporary:
        os.environ["FLOWMETAL_HOME"] = str(Path(temporary) / "home")
        os.environ["FLOWMETAL_CONFIG"] = str(Path(temporary) / "config.toml")
        from tui_gridkit import FLOWS, local_grid, wait_until

        from flowmetal_cli.bundle import build_bundle

        with local_grid(Path(temporary) / "home") as grid:
            client = grid.client
            node = f"/local/{getpass.getuser()}/team"
            client.quota_set(node, {"running": 1, "live": 4})
            client.quota_set(f"{node}/web", {"running": 2, "journal_bytes": 65536})
            built = build_bundle(FLOWS / "until_told.flow")
            client.upload_bundle(built.data, built.digest)
            holder = client.start_flow(built.digest, {}, name="until_told.flow", quota=node)
            grid.wait_flow(holder["id"], ("running",))
            held = client.start_flow(built.digest, {}, name="until_told.flow", quota=f"{node}/web")
            wait_until(lambda: "waiting for quota" in str(client.why(held["id"])["reason"]), 20, "the pending flow")
            wait_until(lambda: all(p.get("alive") for p in client.processes()), 20, "every process to be up")
            data = capture(grid, {"holder": holder["id"], "held": held["id"]}, quotas=True)
    write(data, path)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    record_quotas() if sys.argv[1:] == ["quotas"] else record()
