"""Secrets end to end on a real local grid: set from stdin, used by a flow in an HTTP header and an exec
environment, masked in what is recorded, and nowhere in the Flow DB file, its WAL or any log."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import LoopbackServer, QuietJsonHandler
from tests.integration.conftest import Grid

VALUE = "s3cr3t-Value-7f1d"

USES = """
load("pkg.flowmetal.io/workspace/v1", "workspace", "exec")

def _call_impl(fctx):
    token = fctx.secrets.token
    print("the reference:", token)
    r = fctx.actions.http("GET", fctx.args.url + "/echo", headers = {"Authorization": "Bearer " + token})
    e = exec(fctx.resources.ws, "sh", "-c", "echo token=$TOKEN; printf %s \\"$TOKEN\\" | sha256sum", env = {"TOKEN": token})
    return {"status": r.status, "echo": r.json["authorization"], "out": e.stdout}

call = flow(implementation = _call_impl, secrets = {"token": "api-token"},
            resources = {"ws": lambda fctx: workspace()})

def _narrow_impl(fctx):
    return dir(fctx.secrets)

def _inner_impl(fctx):
    return narrow()

narrow = flow(implementation = _narrow_impl)
inner = flow(implementation = _inner_impl, secrets = {"token": "api-token"})

if __name__ == "__flow__":
    print(json.encode(call(url = fctx().args.url)))
    print("inherited", inner())
"""

UNKNOWN = """
def _impl(fctx):
    return "never"

uses = flow(implementation = _impl, secrets = {"token": "no-such-secret"})

if __name__ == "__flow__":
    uses()
"""

WIDEN = """
def _impl(fctx):
    return "never"

def _outer_impl(fctx):
    return wider()

wider = flow(implementation = _impl, secrets = {"other": "other-token"})
outer = flow(implementation = _outer_impl, secrets = {"token": "api-token"})

if __name__ == "__flow__":
    outer()
"""


class Echo(QuietJsonHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        header = self.headers.get("authorization", "")
        Echo.seen.append(header)
        self.send_json(200, {"authorization": header})


@pytest.fixture
def echo() -> Iterator[LoopbackServer]:
    server = LoopbackServer(Echo)
    try:
        yield server
    finally:
        server.close()


def cli(grid: Grid, *args: str, input: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowmetal_cli", *args], env={**grid.env, **(env or {})}, input=input,
                          capture_output=True, text=True, timeout=60, cwd=grid.project)


def _every_file(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.is_file()]


def test_a_secret_reaches_the_connectors_and_nothing_else(grid: Grid, echo: LoopbackServer) -> None:
    done = cli(grid, "secret", "set", "api-token", input=VALUE + "\n")
    assert done.returncode == 0, done.stderr
    assert cli(grid, "secret", "set", "other-token", "--from-env", "OTHER", env={"OTHER": "x" * 12}).returncode == 0
    listed = grid.cli("secret", "list", "--json")
    assert listed.returncode == 0 and VALUE not in listed.stdout
    assert sorted(s["name"] for s in json.loads(listed.stdout)) == ["api-token", "other-token"]

    script = grid.write("uses.flow", USES)
    flow_id = grid.start(script, {"url": echo.url})
    flow = grid.wait(flow_id)
    assert flow["status"] == "completed", flow["error"]
    assert Echo.seen == [f"Bearer {VALUE}"]  # the server got the value
    lines = grid.logs(flow_id)
    assert lines[0] == "the reference: {{flowmetal.secret:api-token}}"
    result = json.loads(lines[1])
    assert result["status"] == 200 and result["echo"] == "Bearer ***"  # the echo was masked before recording
    digest = hashlib.sha256(VALUE.encode()).hexdigest()
    assert result["out"] == f"token=***\n{digest}  -\n"  # the command saw the value; its output is masked
    assert lines[2] == 'inherited ["token"]'  # a child that declares nothing inherits its parent's grant

    grid.cli("grid", "down")  # logs flushed, WAL as it is: nothing anywhere holds the value
    leaked = [str(p) for p in _every_file(grid.paths.home) if VALUE.encode() in p.read_bytes()]
    assert leaked == [], leaked
    assert any(p.name.endswith("-wal") or p.suffix == ".log" for p in _every_file(grid.paths.home))


def test_an_unknown_or_widened_secret_fails_the_flow_at_start(grid: Grid) -> None:
    unknown = grid.start(grid.write("unknown.flow", UNKNOWN))
    failed = grid.wait(unknown)
    assert failed["status"] == "failed"
    assert "run impl: no secret no-such-secret at quota node /local/" in failed["error"]["message"], failed["error"]
    assert cli(grid, "secret", "set", "api-token", input="v1").returncode == 0
    assert cli(grid, "secret", "set", "other-token", input="v2").returncode == 0
    widened = grid.wait(grid.start(grid.write("widen.flow", WIDEN)))
    assert widened["status"] == "failed"
    assert "secret other-token was not granted to the calling flow" in widened["error"]["message"], widened["error"]


IN_A_CONTAINER = """
load("pkg.flowmetal.io/docker/v1", "docker")

def _box_impl(fctx):
    r = docker.exec(fctx.resources.box, ["sh", "-c", "echo token=$TOKEN"], env = {"TOKEN": fctx.secrets.token},
                    stream = True)
    return r.stdout

box = flow(implementation = _box_impl, secrets = {"token": "api-token"},
           resources = {"box": lambda fctx: docker.container(image = fctx.args.image)})

if __name__ == "__flow__":
    print("result", box(image = fctx().args.image).strip())
"""


def test_a_secret_in_a_containers_exec_env_is_masked_in_its_streamed_log(grid: Grid, docker_engine: Any) -> None:
    try:
        assert cli(grid, "secret", "set", "api-token", input=VALUE).returncode == 0
        flow_id = grid.start(grid.write("box.flow", IN_A_CONTAINER), {"image": docker_engine.image})
        flow = grid.wait(flow_id, timeout=120)
        assert flow["status"] == "completed", flow["error"]
        lines = grid.logs(flow_id)
        assert "token=***" in lines and "result token=***" in lines, lines  # streamed, then returned
        assert not [line for line in lines if VALUE in line]
    finally:
        docker_engine.remove_all_of(grid.paths.home)
