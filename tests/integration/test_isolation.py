"""Tenant isolation inside a shared grid: a flow of /acme/web tries, as an attacker would, to reach
the flows of its sibling /acme/ci. Every attempt fails with a clear error and changes nothing.

One grid for the module with a tokens file (web under /acme/web, ci under /acme/ci).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flowmetal_cli.bundle import build_bundle
from flowmetal_cli.client import GridClient
from grid_local.home import GridPaths
from grid_local.supervisor import free_port, start_background
from tests.helpers import write_file
from tests.integration.conftest import FINISHED, stop_grid

TOKENS = """
[tokens."web-token"]
user = "wendy"
quota = "/acme/web"

[tokens."ci-token"]
user = "carl"
quota = "/acme/ci"
"""

# The victim: a child that finished with a private result, and a flow holding a workspace with a
# private file, waiting for a message from its own tenant.
VICTIM = """
load("pkg.flowmetal.io/workspace/v1", "workspace", "exec")

def _private_impl(fctx):
    return "ci-private-result"

private = flow(implementation = _private_impl)

def _holder_impl(fctx):
    exec(fctx.resources.ws, "sh", "-c", "echo private > secret.txt")
    print("holding", fctx.flow_id, fctx.resources.ws["path"])
    print("got", fctx.actions.receive(timeout = 120))
    print("after", exec(fctx.resources.ws, "cat", "secret.txt").stdout.strip())

holder = flow(implementation = _holder_impl, resources = {"ws": lambda fctx: workspace()})

if __name__ == "__flow__":
    t = fctx().actions.run(private)
    fctx().actions.wait([t])
    print("child", t["flow_id"])
    holder()
"""

ATTACKER = """
if __name__ == "__flow__":
    a = fctx().args
    w = fctx().actions.wait([{"flow_id": a.child}], check = False)
    print("wait", w.ok, w.error)
    s = fctx().actions.send(a.holder, "from web", check = False)
    print("send", s.ok, s.error)
    for forged in [{"kind": "workspace", "name": "ws", "path": a.path},
                   {"kind": "workspace", "name": "ws", "flow_id": a.holder, "path": a.path}]:
        e = fctx().actions.exec(forged, ["sh", "-c", "cat secret.txt; echo pwned > secret.txt"], check = False)
        print("exec", e.ok, e.error)
    # Within its own authority the same actions work.
    fctx().actions.send(fctx().flow_id, "to myself", inbox = "mine")
    print("own", fctx().actions.receive(inbox = "mine"))
"""


@dataclass
class Shared:
    url: str
    paths: GridPaths
    project: Path

    def client(self, token: str) -> GridClient:
        return GridClient(self.url, token=token, context="test")

    def start(self, token: str, name: str, source: str, args: dict[str, Any] | None = None) -> str:
        built = build_bundle(write_file(self.project, name, source))
        client = self.client(token)
        if not client.has_bundle(built.digest):
            client.upload_bundle(built.data, built.digest)
        return str(client.start_flow(built.digest, args or {}, name=name)["id"])


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    tmp = tmp_path_factory.mktemp("isolation")
    tokens = tmp / "tokens.toml"
    tokens.write_text(TOKENS)
    paths = GridPaths(tmp / "home")
    project = tmp / "project"
    project.mkdir()
    (project / "flowmetal.toml").write_text('[project]\nname = "isolation"\n')
    try:
        state = start_background(paths, workers=2, listen=f"127.0.0.1:{free_port()}", tokens=tokens)
        yield Shared(str(state["url"]), paths, project)
    finally:
        stop_grid(paths)


def logs(client: GridClient, root: str) -> list[str]:
    lines: list[str] = []
    cursor = 0
    while True:
        page = client.events(after=cursor, root=root)
        if not page["events"]:
            return lines
        cursor = page["cursor"]
        lines += [e["text"] for e in page["events"] if e["type"] == "log"]


def wait_for_line(client: GridClient, root: str, prefix: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in logs(client, root):
            if line.startswith(prefix):
                return line
        time.sleep(0.05)
    raise AssertionError(f"{root} never printed {prefix!r}: {logs(client, root)}")


def wait_finished(client: GridClient, flow_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        flow = client.get_flow(flow_id)
        if flow["status"] in FINISHED:
            return flow
        time.sleep(0.05)
    raise AssertionError(f"flow {flow_id} did not finish: {client.get_flow(flow_id)}")


def test_a_flow_cannot_wait_send_or_exec_outside_its_authority(shared: Shared) -> None:
    ci, web = shared.client("ci-token"), shared.client("web-token")
    victim = shared.start("ci-token", "victim.flow", VICTIM)
    child = wait_for_line(ci, victim, "child ").split()[1]
    _, holder, path = wait_for_line(ci, victim, "holding ").split()
    assert Path(path, "secret.txt").read_text() == "private\n"

    attacker = shared.start("web-token", "attacker.flow", ATTACKER, {"child": child, "holder": holder, "path": path})
    assert wait_finished(web, attacker)["status"] == "completed", web.get_flow(attacker)
    lines = logs(web, attacker)
    assert lines[0].startswith(f"wait False wait: task {child} was not started by this flow"), lines
    assert lines[1].startswith(f"send False send: no flow {holder} that this flow may write to"), lines
    assert lines[2].startswith("exec False exec: resource 'ws' is not one this flow opened"), lines
    assert lines[3].startswith("exec False exec: resource 'ws' is not one this flow opened"), lines
    assert lines[4] == "own to myself", lines
    assert "ci-private-result" not in "\n".join(lines)

    # Nothing changed for ci: the file is intact, and the holder's first message is ci's own.
    assert Path(path, "secret.txt").read_text() == "private\n"
    ci.send(holder, "from ci")
    assert wait_finished(ci, victim)["status"] == "completed", ci.get_flow(victim)
    assert logs(ci, victim)[-2:] == ["got from ci", "after private"]
