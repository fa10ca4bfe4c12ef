"""A shared grid with tokens as a remote context: push, deployments, start, refusals, quota scoping.

One grid for the module, on its own loopback port with a tokens file (alice under /acme/ci, bob
under /other); every command is the real CLI in a subprocess with an isolated config and home.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flowmetal_cli.client import GridClient
from grid_local.home import GridPaths
from grid_local.supervisor import free_port, start_background
from tests.integration.conftest import FINISHED, grid_env, stop_grid

TOKENS = """
[tokens."alice-secret-token"]
user = "alice"
quota = "/acme/ci"

[tokens."bob-secret-token"]
user = "bob"
quota = "/other"
"""

WHOAMI = """
load("pkg.flowmetal.io/prelude/v1", "fctx")

if __name__ == "__flow__":
    me = fctx()
    print(me.quota.username, me.quota.path, me.args.greeting if "greeting" in dir(me.args) else "-")
"""

WAITER = """
if __name__ == "__flow__":
    print("waiting")
    print("got", fctx().actions.receive())
"""


@dataclass
class Remote:
    url: str
    env: dict[str, str]
    project: Path

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "flowmetal_cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=self.project)
        assert "Traceback" not in done.stderr, done.stderr
        for secret in ("alice-secret-token", "bob-secret-token"):
            assert secret not in done.stdout + done.stderr, "a token was printed"
        return done

    def client(self, token: str) -> GridClient:
        return GridClient(self.url, token=token, context="test")

    def write(self, name: str, source: str) -> Path:
        path = self.project / name
        path.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")
        return path


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    tmp = tmp_path_factory.mktemp("remote")
    tokens = tmp / "tokens.toml"
    tokens.write_text(TOKENS)
    paths = GridPaths(tmp / "remote-home")
    project = tmp / "project"
    project.mkdir()
    (project / "flowmetal.toml").write_text('[project]\nname = "remote-it"\n')
    env = {**grid_env(tmp), "ALICE_TOKEN": "alice-secret-token", "BOB_TOKEN": "bob-secret-token",
           "WRONG_TOKEN": "not-a-token", "PYTHONUNBUFFERED": "1"}
    try:
        state = start_background(paths, workers=1, listen=f"127.0.0.1:{free_port()}", tokens=tokens)
        found = Remote(str(state["url"]), env, project)
        for name, variable in (("remote", "ALICE_TOKEN"), ("bob", "BOB_TOKEN"), ("wrong", "WRONG_TOKEN")):
            added = found.cli("context", "add", name, "--url", found.url, "--token-env", variable)
            assert added.returncode == 0, added.stderr
        assert found.cli("context", "add", "anonymous", "--url", found.url).returncode == 0
        yield found
    finally:
        stop_grid(paths)
        stop_grid(GridPaths(Path(env["FLOWMETAL_HOME"])))  # had anything fallen back to a local grid


def wait_finished(client: GridClient, flow_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        flow = client.get_flow(flow_id)
        if flow["status"] in FINISHED:
            return flow
        time.sleep(0.05)
    raise AssertionError(f"flow {flow_id} did not finish: {client.get_flow(flow_id)}")


def test_push_deployments_start_as_the_tokens_user(remote: Remote) -> None:
    script = remote.write("whoami.flow", WHOAMI)
    pushed = remote.cli("push", "--context", "remote", str(script))
    assert pushed.returncode == 0, pushed.stderr
    lines = pushed.stdout.splitlines()
    assert lines[0].startswith("uploaded sha256:") and "(1 files," in lines[0]
    digest = lines[0].split()[1]
    assert lines[1] == f"deployed whoami -> {digest} (context remote, quota /acme/ci)"

    again = remote.cli("push", "--context", "remote", "--json", str(script))
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["uploaded"] is False and result["digest"] == digest and result["name"] == "whoami"

    listed = json.loads(remote.cli("deployments", "--context", "remote", "--json").stdout)
    mine = [d for d in listed if d["name"] == "whoami"]
    assert mine and mine[0]["digest"] == digest and mine[0]["quota"] == "/acme/ci"
    table = remote.cli("deployments", "--context", "remote").stdout.splitlines()
    assert table[0].split() == ["NAME", "DIGEST", "UPDATED", "QUOTA"]
    assert any(line.split()[0] == "whoami" and line.split()[-1] == "/acme/ci" for line in table[1:])

    started = remote.cli("start", "--context", "remote", "whoami")
    assert started.returncode == 0, started.stderr
    assert started.stdout == "alice /acme/ci -\n"
    with_args = remote.cli("start", "--context", "remote", "whoami", "--arg", "greeting=hi")
    assert with_args.stdout == "alice /acme/ci hi\n", with_args.stderr

    detached = remote.cli("start", "--context", "remote", "--detach", "whoami")
    assert detached.returncode == 0, detached.stderr
    flow_id = detached.stdout.strip()
    with remote.client("alice-secret-token") as alice:
        flow = wait_finished(alice, flow_id)
    assert flow["status"] == "completed" and flow["quota"] == "/acme/ci" and flow["flow"] == "whoami"


def test_push_a_bundle_archive(remote: Remote) -> None:
    script = remote.write("archived.flow", 'if __name__ == "__flow__":\n    print("from the archive")\n')
    archive = remote.project / "dist" / "archived.bundle"
    bundled = remote.cli("bundle", str(script), "-o", str(archive))
    assert bundled.returncode == 0, bundled.stderr
    digest = bundled.stdout.splitlines()[0]
    pushed = remote.cli("push", "--context", "remote", "--name", "from-archive", "--json", str(archive))
    assert pushed.returncode == 0, pushed.stderr
    result = json.loads(pushed.stdout)
    assert result["digest"] == digest and result["entry"] == "archived.flow" and result["uploaded"] is True
    started = remote.cli("start", "--context", "remote", "from-archive")
    assert (started.returncode, started.stdout) == (0, "from the archive\n")

    archive.write_bytes(archive.read_bytes()[:-40])  # truncated: refused before anything is sent
    broken = remote.cli("push", "--context", "remote", str(archive))
    assert broken.returncode == 2 and broken.stderr.startswith("error: ") and "archived.bundle" in broken.stderr


@pytest.mark.parametrize("context", ["wrong", "anonymous"])
def test_a_wrong_or_missing_token_is_refused(remote: Remote, context: str) -> None:
    script = remote.write("refused.flow", 'print("never")\n')
    for args in (("push", str(script)), ("deployments",), ("ps",), ("start", "whoami")):
        done = remote.cli(*args, "--context", context)
        assert done.returncode == 4, (args, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(f"error: context '{context}': the token was refused"), done.stderr


def test_another_quota_can_neither_see_nor_steer_acme_flows(remote: Remote) -> None:
    script = remote.write("waiter.flow", WAITER)
    assert remote.cli("push", "--context", "remote", "--name", "waiter", str(script)).returncode == 0
    flow_id = remote.cli("start", "--context", "remote", "--detach", "waiter").stdout.strip()
    assert flow_id

    seen_by_bob = json.loads(remote.cli("ps", "--context", "bob", "--all", "--json").stdout)
    assert flow_id not in [f["id"] for f in seen_by_bob]
    assert all(f["quota"].startswith("/other") for f in seen_by_bob)
    assert "waiter" not in [d["name"] for d in json.loads(remote.cli("deployments", "--context", "bob", "--json").stdout)]
    assert flow_id in [f["id"] for f in json.loads(remote.cli("ps", "--context", "remote", "--all", "--json").stdout)]

    # A flow or deployment outside bob's subtree answers exactly as one that does not exist.
    unknown = "0123456789ab"
    for args in (("cancel", flow_id), ("inspect", flow_id), ("logs", flow_id), ("send", flow_id, '"hi"'),
                 ("start", "waiter")):
        done = remote.cli(*args, "--context", "bob")
        missing = remote.cli(*[{flow_id: unknown, "waiter": "no-such-deployment"}.get(a, a) for a in args],
                             "--context", "bob")
        assert done.returncode == missing.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.replace(flow_id, unknown).replace("waiter", "no-such-deployment") == missing.stderr
        assert done.stderr.count("\n") == 1

    with remote.client("alice-secret-token") as alice:
        assert alice.get_flow(flow_id)["status"] not in FINISHED  # bob's cancel did nothing
        cancelled = remote.cli("cancel", "--context", "remote", flow_id)
        assert cancelled.returncode == 0, cancelled.stderr
        assert wait_finished(alice, flow_id)["status"] == "cancelled"
    again = remote.cli("cancel", "--context", "remote", flow_id)
    assert again.returncode == 1 and again.stderr.startswith("error: conflict: flow")
