"""Secrets end to end on a real local grid: set from stdin, used by a flow in an HTTP header and an exec
environment, masked in what is recorded, and nowhere in the Flow DB file, its WAL or any log."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from grid_local.connectors.resources import MAX_OUTPUT
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


ENCODED_VALUE = "s3?>>cr3t/Va??lue+7f1d"  # its base64 has "/" and padding; percent-encoding changes it


def encoded_forms(value: str) -> dict[str, bytes]:
    """The value and the encodings an echo may carry it in, as bytes to look for in files."""
    raw = value.encode()
    forms = {"plain": raw, "base64": base64.b64encode(raw), "base64url": base64.urlsafe_b64encode(raw),
             "hex": raw.hex().encode(), "HEX": raw.hex().upper().encode(),
             "percent": quote(value, safe="").encode(), "basic": base64.b64encode(b"user:" + raw)}
    forms |= {f"{k}-unpadded": v.rstrip(b"=") for k, v in list(forms.items()) if k.startswith("base64")}
    assert len(set(forms.values())) == len(forms), forms  # each a distinct thing to look for
    return forms


class EncodingEcho(QuietJsonHandler):
    """Answers the token of its Authorization header back verbatim and in each encoding."""

    seen: list[str] = []

    def do_GET(self) -> None:
        header = self.headers.get("authorization", "")
        EncodingEcho.seen.append(header)
        token = header.removeprefix("Bearer ")
        forms = {k: v.decode() for k, v in encoded_forms(token).items()}
        self.send_json(200, {"authorization": header, "header-base64": base64.b64encode(header.encode()).decode(),
                             **forms})


ECHOES = """
load("pkg.flowmetal.io/workspace/v1", "workspace", "exec")

def _echo_impl(fctx):
    token = fctx.secrets.token
    r = fctx.actions.http("GET", fctx.args.url, headers = {"Authorization": "Bearer " + token})
    e = exec(fctx.resources.ws, "sh", "-c",
             "echo plain=$TOKEN; printf %s \\"$TOKEN\\" | base64; printf %s \\"$TOKEN\\" | base64 | tr -d =; " +
             "printf %s \\"$TOKEN\\" | base64 | tr '+/' '-_'; printf %s \\"$TOKEN\\" | od -An -tx1 | tr -d ' \\\\n'",
             env = {"TOKEN": token})
    # Output over the limit keeps its last MiB: the cut goes through the value.
    cut = exec(fctx.resources.ws, "sh", "-c",
               "printf %s \\"$TOKEN\\"; head -c " + str(fctx.args.filler) + " /dev/zero | tr '\\\\0' a",
               env = {"TOKEN": token})
    print("http", json.encode(r.json))
    print("exec", e.stdout)
    print("cut", cut.stdout[:12])
    return {"body": r.body, "out": e.stdout, "err": e.stderr}

echo = flow(implementation = _echo_impl, secrets = {"token": "api-token"},
            resources = {"ws": lambda fctx: workspace()})

if __name__ == "__flow__":
    print(json.encode(echo(url = fctx().args.url, filler = fctx().args.filler)))
"""


def found_in(home: Path, forms: dict[str, bytes]) -> list[tuple[str, str]]:
    return [(str(p.relative_to(home)), name) for p in _every_file(home) for name, form in forms.items()
            if form in p.read_bytes()]


def test_no_encoding_of_a_secrets_echo_reaches_the_flow_db_or_a_log(grid: Grid) -> None:
    """A server echoes the secret back in base64, hex and percent-encoding, a command prints it in
    base64 and hex: all masked before recording, so the raw bytes of the Flow DB, its WAL and shm,
    and every log in the grid's home hold none of them."""
    server = LoopbackServer(EncodingEcho)
    EncodingEcho.seen = []
    try:
        assert cli(grid, "secret", "set", "api-token", input=ENCODED_VALUE).returncode == 0
        flow_id = grid.start(grid.write("echoes.flow", ECHOES), {"url": server.url, "filler": MAX_OUTPUT - 10})
        flow = grid.wait(flow_id)
    finally:
        server.close()
    assert flow["status"] == "completed", flow["error"]
    assert EncodingEcho.seen == [f"Bearer {ENCODED_VALUE}"]  # the server got the value itself
    lines = grid.logs(flow_id)
    echoed = json.loads(lines[0].removeprefix("http "))
    assert set(echoed) == {"authorization", "header-base64", *encoded_forms(ENCODED_VALUE)}, echoed
    assert echoed["authorization"] == "Bearer ***"
    # Every encoding of the value alone is wholly masked; in base64 of "user:value" only the
    # characters that mix the value's edge bytes with "user:" stay.
    assert all(v == "***" for k, v in echoed.items() if k not in ("authorization", "header-base64", "basic")), echoed
    for embedded, prefix in ((echoed["basic"], "user:"), (echoed["header-base64"], "Bearer ")):
        left, right = embedded.split("***")  # exactly one mask
        assert len(left) <= 4 * -(-len(prefix) // 3) and len(right) <= 4, echoed
    assert lines[1] == "exec plain=***\n***\n***\n***\n***", lines
    assert lines[2] == "cut ***aaaaaaaaa", lines  # the value's last 10 characters began the kept output

    home = grid.paths.home
    db = grid.paths.db
    assert {Path(f"{db}-wal").exists(), Path(f"{db}-shm").exists()} == {True}, list(home.iterdir())
    forms = {**encoded_forms(ENCODED_VALUE), "cut": ENCODED_VALUE[-10:].encode() + b"aaaa"}
    assert found_in(home, forms) == []  # while running: the DB, its WAL and shm, every log
    assert grid.cli("grid", "down").returncode == 0
    assert found_in(home, forms) == []  # stopped: logs flushed, the WAL checkpointed
    assert [p for p in _every_file(home) if p.suffix == ".log"], "no log was looked at"
