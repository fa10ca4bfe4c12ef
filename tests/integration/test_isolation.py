"""Tenant isolation inside a shared grid: a flow of /acme/web tries, as an attacker would, to reach
the flows of its sibling /acme/ci. Every attempt fails with a clear error and changes nothing.

One grid for the module with a tokens file (web under /acme/web, ci under /acme/ci).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowmetal_cli.bundle import build_bundle
from flowmetal_cli.client import GridClient
from grid_local.api.worker_auth import TOKEN_FILE
from grid_local.home import GridPaths
from grid_local.layout import COMPONENTS, Layout
from grid_local.supervisor import free_port, start_background
from tests.helpers import LoopbackServer, QuietJsonHandler, write_file
from tests.integration.conftest import FINISHED, stop_grid
from tests.integration.spread import machine_env, wait_until

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
        # The allow list opens one loopback address (servers on 127.0.0.2); 127.0.0.1 stays refused.
        state = start_background(paths, workers=2, listen=f"127.0.0.1:{free_port()}", tokens=tokens,
                                 http_allow="127.0.0.2/32")
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


SLEEPER = """
if __name__ == "__flow__":
    print("started")
    fctx().actions.receive(timeout = 120)
"""


def raw(shared: Shared, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, shared.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30, **kwargs)


def test_api_answers_a_foreign_flow_as_an_unknown_one(shared: Shared) -> None:
    ci_flow = shared.start("ci-token", "sleeper.flow", SLEEPER)
    unknown = "0123456789ab"
    for method, suffix, body in (("GET", "", None), ("POST", "/cancel", None), ("POST", "/messages", {"value": 1}),
                                 ("POST", "/inject", {"action": "fail"})):
        foreign = raw(shared, "web-token", method, f"/v1/flows/{ci_flow}{suffix}", json=body)
        missing = raw(shared, "web-token", method, f"/v1/flows/{unknown}{suffix}", json=body)
        assert foreign.status_code == missing.status_code == 404, (suffix, foreign.text)
        assert foreign.json() == {"error": "not_found", "message": f"no flow {ci_flow}"}
        assert missing.json() == {"error": "not_found", "message": f"no flow {unknown}"}
    events = raw(shared, "web-token", "GET", "/v1/events", params={"root": ci_flow})
    assert events.status_code == 404 and events.json()["message"] == f"no flow {ci_flow}"
    assert shared.client("ci-token").get_flow(ci_flow)["status"] not in FINISHED  # nothing was done to it
    shared.client("ci-token").cancel(ci_flow)


def test_listing_filters_by_tenant_before_the_limit(shared: Shared) -> None:
    web_flow = shared.start("web-token", "quick.flow", 'print("quick")\n')
    wait_finished(shared.client("web-token"), web_flow)
    ci_flow = shared.start("ci-token", "quick.flow", 'print("quick")\n')  # newer than every web flow
    wait_finished(shared.client("ci-token"), ci_flow)
    newest = shared.client("web-token").list_flows(limit=1)
    assert [f["id"] for f in newest] == [web_flow], newest


def test_processes_show_only_the_callers_held_flows(shared: Shared) -> None:
    ci, web = shared.client("ci-token"), shared.client("web-token")
    ci_flow = shared.start("ci-token", "sleeper.flow", SLEEPER)
    wait_for_line(ci, ci_flow, "started")

    def held(client: GridClient) -> set[str]:
        return {f for p in client.processes() for f in p["held_flows"] + [r["flow_id"] for r in p["requests"]]}

    deadline = time.monotonic() + 30
    while ci_flow not in held(ci):  # held while its worker keeps it in memory, waiting for the message
        assert time.monotonic() < deadline, "the ci flow was never held"
        time.sleep(0.05)
    seen_by_web = held(web)
    assert ci_flow not in seen_by_web
    assert all(web.get_flow(f)["quota"] == "/acme/web" for f in seen_by_web)
    ci.cancel(ci_flow)


def test_bundles_and_deployments_belong_to_their_quota_node(shared: Shared) -> None:
    ci, web = shared.client("ci-token"), shared.client("web-token")
    built = build_bundle(write_file(shared.project, "deployed.flow", 'print("ci build")\n'))
    ci.upload_bundle(built.data, built.digest)
    ci.deploy("build", built.digest)

    # The digest is not a key: web neither sees, reads, starts nor deploys ci's bundle.
    assert not web.has_bundle(built.digest)
    for method, path, body in (("GET", f"/v1/bundles/{built.digest}", None),
                               ("POST", "/v1/flows", {"bundle": built.digest}),
                               ("PUT", "/v1/deployments/mine", {"digest": built.digest})):
        answer = raw(shared, "web-token", method, path, json=body)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["message"].startswith(f"no bundle {built.digest}"), answer.text

    # web cannot overwrite ci's deployment by name, and ci's deployment stays ci's.
    own = build_bundle(write_file(shared.project, "attacker-deploy.flow", 'print("web build")\n'))
    web.upload_bundle(own.data, own.digest)
    taken = raw(shared, "web-token", "PUT", "/v1/deployments/build", json={"digest": own.digest})
    assert taken.status_code == 403 and "belongs to a quota node outside /acme/web" in taken.json()["message"]
    assert [(d["name"], d["digest"], d["quota"]) for d in ci.deployments() if d["name"] == "build"] == \
        [("build", built.digest, "/acme/ci")]
    assert "build" not in [d["name"] for d in web.deployments()]
    foreign = raw(shared, "web-token", "POST", "/v1/deployments/build/start", json={})
    missing = raw(shared, "web-token", "POST", "/v1/deployments/nosuch/start", json={})
    assert (foreign.status_code, missing.status_code) == (404, 404)
    assert foreign.json()["message"] == "no deployment named 'build'"

    # web uploading the same bytes makes them its own too (created for web), without touching ci's.
    assert web.upload_bundle(built.data, built.digest)["created"] is True
    assert web.has_bundle(built.digest) and ci.has_bundle(built.digest)
    assert ci.deploy("build", built.digest)["quota"] == "/acme/ci"  # its owner may replace it


CALLS_HOME = """
if __name__ == "__flow__":
    for url in fctx().args.urls:
        r = fctx().actions.http("GET", url, check = False)
        print(r.ok, r.value.status if r.ok else r.error)
"""


class Redirect(QuietJsonHandler):
    """/hop?to=URL redirects there; anything else answers 200."""

    def do_GET(self) -> None:
        if self.path.startswith("/hop?to="):
            self.send_response(302)
            self.send_header("location", self.path.split("=", 1)[1])
            self.send_header("content-length", "0")
            self.end_headers()
            return
        self.send_json(200, {"ok": True})


def test_a_flows_http_follows_the_shared_grids_egress_policy(shared: Shared) -> None:
    state = shared.paths.read_state()
    assert state is not None
    allowed = LoopbackServer(Redirect, host="127.0.0.2")  # in the grid's --http-allow
    inward = LoopbackServer(Redirect)  # 127.0.0.1: loopback, refused on a shared grid
    worker = state["worker_url"]
    urls = [f"{worker}/v1/health", f"{shared.url}/v1/health", f"{allowed.url}/hop?to={worker}/v1/health",
            allowed.url, inward.url, f"{allowed.url}/hop?to={inward.url}/", f"http://localhost:{inward.port}/",
            "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1:9/"]
    try:
        flow_id = shared.start("web-token", "calls-home.flow", CALLS_HOME, {"urls": urls})
        web = shared.client("web-token")
        assert wait_finished(web, flow_id)["status"] == "completed", web.get_flow(flow_id)
        lines = logs(web, flow_id)
    finally:
        allowed.close()
        inward.close()
    worker_port, client_port = httpx.URL(worker).port, httpx.URL(shared.url).port
    refused = "is a loopback address: a shared grid reaches loopback, link-local and private addresses only " \
              "where its --http-allow says"
    assert lines[:6] + ["localhost"] + lines[7:] == [
        f"False http: refused: 127.0.0.1:{worker_port} is this grid's own API "
        "(flows never call the grid's internal endpoints)",
        f"False http: refused: 127.0.0.1:{client_port} is this grid's own API "
        "(flows never call the grid's internal endpoints)",
        f"False http: refused: 127.0.0.1:{worker_port} is this grid's own API "  # checked again at each hop
        "(flows never call the grid's internal endpoints)",
        "True 200",  # the allow list opens 127.0.0.2
        f"False http: refused: 127.0.0.1:{inward.port} {refused}",
        f"False http: refused: 127.0.0.1:{inward.port} {refused}",  # an allowed server cannot redirect inward
        "localhost",  # (below)
        f"False http: refused: 169.254.169.254:80 is a link-local address: a shared grid reaches loopback, "
        "link-local and private addresses only where its --http-allow says",
        f"False http: refused: 10.0.0.1:9 is a private address: a shared grid reaches loopback, "
        "link-local and private addresses only where its --http-allow says",
    ], lines
    # A name: every address it resolves to is checked (127.0.0.1 or ::1 first, as the resolver says).
    assert re.fullmatch(rf"False http: refused: localhost:{inward.port} \((127\.0\.0\.1|::1)\) {refused}", lines[6])


def test_the_worker_api_needs_the_grids_credential_which_flows_never_see(shared: Shared) -> None:
    state = shared.paths.read_state()
    assert state is not None
    for path in ("/v1/connectors/clock/deadlines", "/v1/bundles/sha256:x"):
        refused = httpx.get(state["worker_url"] + path, timeout=10)
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized", refused.text
    assert httpx.get(state["worker_url"] + "/v1/health", timeout=10).status_code == 200
    token = (shared.paths.home / "worker-api.token").read_text().strip()
    source = """
load("pkg.flowmetal.io/workspace/v1", "workspace", "exec")

def _env_impl(fctx):
    return exec(fctx.resources.ws, "env").stdout

env = flow(implementation = _env_impl, resources = {"ws": lambda fctx: workspace()})

if __name__ == "__flow__":
    print(env())
"""
    flow_id = shared.start("web-token", "env.flow", source)
    web = shared.client("web-token")
    assert wait_finished(web, flow_id)["status"] == "completed", web.get_flow(flow_id)
    seen = "\n".join(logs(web, flow_id))
    assert "PATH=" in seen and token not in seen and "FLOWMETAL_WORKER_TOKEN" not in seen


def test_hooks_and_schedules_of_another_tenant_answer_as_unknown_ones(shared: Shared) -> None:
    ci, web = shared.client("ci-token"), shared.client("web-token")
    for client, name in ((ci, "ci-dep"), (web, "web-dep")):
        built = build_bundle(write_file(shared.project, f"{name}.flow", f'print("{name}")\n'))
        client.upload_bundle(built.data, built.digest)
        client.deploy(name, built.digest)
    hook = {"deployment": "ci-dep", "signature": "none"}
    schedule = {"deployment": "ci-dep", "cron": "0 0 1 1 *"}
    assert raw(shared, "ci-token", "PUT", "/v1/hooks/ci-hook", json=hook).status_code == 200
    assert raw(shared, "ci-token", "PUT", "/v1/schedules/ci-cron", json=schedule).status_code == 200

    for kind, name, suffixes in (("hooks", "hook", [("GET", ""), ("DELETE", "")]),
                                 ("schedules", "schedule", [("GET", ""), ("DELETE", ""), ("POST", "/pause"),
                                                            ("POST", "/resume"), ("POST", "/trigger")])):
        own = f"ci-{'hook' if kind == 'hooks' else 'cron'}"
        for method, suffix in suffixes:
            foreign = raw(shared, "web-token", method, f"/v1/{kind}/{own}{suffix}")
            missing = raw(shared, "web-token", method, f"/v1/{kind}/nosuch{suffix}")
            assert foreign.status_code == missing.status_code == 404, (kind, suffix, foreign.text)
            assert foreign.json() == {"error": "not_found", "message": f"no {name} named '{own}'"}
            assert missing.json() == {"error": "not_found", "message": f"no {name} named 'nosuch'"}
        assert own not in [h["name"] for h in raw(shared, "web-token", "GET", f"/v1/{kind}").json()]
        # A hook or schedule of ci's deployment: that deployment answers as an unknown one.
        body = {**(hook if kind == "hooks" else schedule)}
        answer = raw(shared, "web-token", "PUT", f"/v1/{kind}/web-{name}", json=body)
        assert answer.status_code == 404 and answer.json()["message"] == "no deployment named 'ci-dep'", answer.text
        # Names are grid-wide: web cannot take ci's name over with its own deployment.
        taken = raw(shared, "web-token", "PUT", f"/v1/{kind}/{own}", json={**body, "deployment": "web-dep"})
        assert taken.status_code == 403, taken.text
        assert taken.json()["message"].startswith(f"{name} {own} belongs to a quota node outside /acme/web")
        kept = raw(shared, "ci-token", "GET", f"/v1/{kind}/{own}").json()
        assert (kept["deployment"], kept["quota"]) == ("ci-dep", "/acme/ci"), kept


CI_WORKSPACE = """
load("pkg.flowmetal.io/workspace/v1", "workspace", "exec")

def _hold_impl(fctx):
    exec(fctx.resources.ws, "sh", "-c", "echo ci-private > secret.txt")
    print("holding", fctx.resources.ws["path"])
    fctx.actions.receive(timeout = 120)

hold = flow(implementation = _hold_impl, resources = {"ws": lambda fctx: workspace()})

if __name__ == "__flow__":
    hold()
"""

# What a sandboxed command tries: read the grid's files with python3, list the home, call the Worker
# API, and leave processes behind (nohup; one that clears its environment and leaves the session).
PROBE = '''
load("pkg.flowmetal.io/workspace/v1", "workspace", "exec")

READ = """
import sys
for path in sys.argv[1:]:
    try:
        open(path, "rb").read(1)
        print("read", path)
    except OSError as exc:
        print("refused", path, type(exc).__name__)
"""

CONNECT = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout = 5)
    print("connected")
except OSError as exc:
    print("no connection", type(exc).__name__)
"""

def _probe_impl(fctx):
    a, ws = fctx.args, fctx.resources.ws
    print(exec(ws, "python3", "-c", READ, *a.paths).stdout.strip())
    print("home:", " ".join(exec(ws, "find", a.home, "-maxdepth", "3").stdout.split()))
    print(exec(ws, "python3", "-c", CONNECT, str(a.port)).stdout.strip())
    left = "nohup sleep 6007 > /dev/null 2>&1 & env -i setsid -f sleep 6008 > /dev/null 2>&1; echo started"
    print(exec(ws, "sh", "-c", left).stdout.strip())
    print("own", exec(ws, "sh", "-c", "echo mine > f.txt; cat f.txt").stdout.strip(), fctx.flow_id)

probe = flow(implementation = _probe_impl, resources = {"ws": lambda fctx: workspace()})

if __name__ == "__flow__":
    probe(paths = fctx().args.paths, home = fctx().args.home, port = fctx().args.port)
'''


def sleeping(*durations: str) -> list[int]:
    """Pids of this machine's `sleep D` processes (any namespace: /proc here shows them all)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.name.isdigit() and argv[:1] and argv[0].endswith(b"sleep") and argv[1:2] and \
                argv[1].decode() in durations:
            found.append(int(entry.name))
    return found


def test_a_sandboxed_command_sees_only_its_workspace_and_leaves_nothing(shared: Shared) -> None:
    ci, web = shared.client("ci-token"), shared.client("web-token")
    holder = shared.start("ci-token", "ci-workspace.flow", CI_WORKSPACE)
    ci_path = wait_for_line(ci, holder, "holding ").split()[1]
    home = shared.paths.home
    state = shared.paths.read_state()
    assert state is not None and state["isolation"]["sandbox"] == "exec"
    secret_files = [home / "secrets.key", home / "worker-api.token"]
    raw(shared, "ci-token", "PUT", "/v1/secrets/ci-only", json={"value": "ci-value-1"})
    paths = [str(shared.paths.db), f"{shared.paths.db}-wal", *map(str, secret_files), f"{ci_path}/secret.txt"]
    assert all(Path(p).exists() for p in paths), paths  # all there, readable by the grid's user

    probe = shared.start("web-token", "probe.flow", PROBE,
                         {"paths": paths, "home": str(home), "port": httpx.URL(state["worker_url"]).port})
    assert wait_finished(web, probe, timeout=60)["status"] == "completed", web.get_flow(probe)
    lines = "\n".join(logs(web, probe)).splitlines()
    assert lines[:len(paths)] == [f"refused {p} FileNotFoundError" for p in paths], lines
    own_line = lines[-1].split()
    assert own_line[:2] == ["own", "mine"], lines
    # The home shows nothing but this flow's own workspace (which is its child's: probe opened it).
    shown = lines[len(paths)].split()[1:]
    assert shown[:2] == [str(home), str(home / "workspaces")] and len(shown) == 4, shown
    assert shown[3].endswith("/ws") and Path(shown[3]).parent.parent == home / "workspaces", shown
    assert lines[len(paths) + 1] == "no connection ConnectionRefusedError", lines  # no network but its own
    assert lines[len(paths) + 2] == "started", lines
    deadline = time.monotonic() + 20
    while sleeping("6007", "6008") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sleeping("6007", "6008") == [], "a process a sandboxed command started outlived it"
    assert Path(ci_path, "secret.txt").read_text() == "ci-private\n"  # untouched
    ci.cancel(holder)


CI_SECRET = "ci-deploy-value-93kq"

# A web flow that declares ci's secret, one that declares an unknown one (they must fail alike), and
# one that writes references to ci's secret by hand into an http request and an exec environment.
DECLARES = """
def _impl(fctx):
    return "never"

uses = flow(implementation = _impl, secrets = {"key": fctx().args.name})

if __name__ == "__flow__":
    uses()
"""

FORGES = """
load("pkg.flowmetal.io/workspace/v1", "workspace", "exec")

def _forge_impl(fctx):
    forged = "{{flowmetal.secret:ci-deploy-key}}"
    r = fctx.actions.http("GET", fctx.args.url, headers = {"Authorization": "Bearer " + forged}, check = False)
    print("http", r.ok, r.error)
    own = fctx.actions.http("GET", fctx.args.url, headers = {"Authorization": fctx.secrets.own + " " + forged},
                            check = False)
    print("mixed", own.ok, own.error)
    e = fctx.actions.exec(fctx.resources.ws, ["sh", "-c", "echo got=$K"], env = {"K": forged}, check = False)
    print("exec", e.ok, e.error)

forge = flow(implementation = _forge_impl, secrets = {"own": "web-key"},
             resources = {"ws": lambda fctx: workspace()})

if __name__ == "__flow__":
    forge(url = fctx().args.url)
"""

USES_CI_SECRET = """
def _impl(fctx):
    return fctx.actions.http("GET", fctx.args.url, headers = {"Authorization": fctx.secrets.key}).json["authorization"]

uses = flow(implementation = _impl, secrets = {"key": "ci-deploy-key"})

if __name__ == "__flow__":
    print("echo", uses(url = fctx().args.url))
"""


class HeaderEcho(QuietJsonHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        HeaderEcho.seen.append(self.headers.get("authorization", ""))
        self.send_json(200, {"authorization": self.headers.get("authorization", "")})


def test_a_tenant_neither_uses_sees_nor_removes_another_tenants_secrets(shared: Shared) -> None:
    ci, web = shared.client("ci-token"), shared.client("web-token")
    ci.secret_set("ci-deploy-key", CI_SECRET)
    web.secret_set("web-key", "web-value-5521")
    before = [s for s in ci.secrets() if s["name"] == "ci-deploy-key"]
    assert [(s["quota"], s["set_by"]) for s in before] == [("/acme/ci", "carl")]

    # Listing: each sees the names of its own subtree only.
    assert "ci-deploy-key" not in [s["name"] for s in web.secrets()]
    assert all(s["quota"] == "/acme/web" for s in web.secrets()), web.secrets()
    assert "web-key" not in [s["name"] for s in ci.secrets()]

    # Declaring ci's secret fails the flow at start exactly as an unknown name does.
    errors = {}
    for name in ("ci-deploy-key", "no-such-key"):
        flow_id = shared.start("web-token", f"declares-{name}.flow", DECLARES, {"name": name})
        failed = wait_finished(web, flow_id)
        assert failed["status"] == "failed", failed
        errors[name] = failed["error"]["message"]
    assert "run impl: no secret ci-deploy-key at quota node /acme/web or above" in errors["ci-deploy-key"], errors
    assert errors["ci-deploy-key"] == errors["no-such-key"].replace("no-such-key", "ci-deploy-key"), errors

    # A reference to ci's secret written by hand fails the action; the server never gets a value.
    server = LoopbackServer(HeaderEcho, host="127.0.0.2")  # in the grid's --http-allow
    HeaderEcho.seen = []
    try:
        forger = shared.start("web-token", "forges.flow", FORGES, {"url": server.url})
        assert wait_finished(web, forger)["status"] == "completed", web.get_flow(forger)
        refused = "secret ci-deploy-key is not granted to this flow"
        assert logs(web, forger) == [f"http False http: {refused} (declare it in flow(..., secrets = {{...}}))",
                                     f"mixed False http: {refused} (declare it in flow(..., secrets = {{...}}))",
                                     f"exec False exec: {refused} (declare it in flow(..., secrets = {{...}}))"]
        assert HeaderEcho.seen == []

        # Removing ci's secret: answered as an unknown one, by name alone or naming ci's node.
        for quota in (None, "/acme/ci"):
            foreign = raw(shared, "web-token", "DELETE", "/v1/secrets/ci-deploy-key",
                          params={"quota": quota} if quota else {})
            missing = raw(shared, "web-token", "DELETE", "/v1/secrets/no-such-key",
                          params={"quota": quota} if quota else {})
            assert foreign.status_code == missing.status_code == 404, (quota, foreign.text)
            where = quota or "/acme/web"
            assert foreign.json() == {"error": "not_found", "message": f"no secret ci-deploy-key at {where}"}
            assert missing.json() == {"error": "not_found", "message": f"no secret no-such-key at {where}"}
        # Overwriting it is refused.
        taken = raw(shared, "web-token", "PUT", "/v1/secrets/ci-deploy-key", json={"value": "web-owned", "quota": "/acme/ci"})
        assert taken.status_code == 403, taken.text
        assert taken.json()["message"] == "wendy (member of /acme/web) may not set secrets at /acme/ci: it is " \
                                          "outside /acme/web"

        # Nothing changed for ci: the same secret, set by carl, and its value still reaches ci's flows.
        assert [s for s in ci.secrets() if s["name"] == "ci-deploy-key"] == before
        user = shared.start("ci-token", "uses-ci-secret.flow", USES_CI_SECRET, {"url": server.url})
        assert wait_finished(ci, user)["status"] == "completed", ci.get_flow(user)
        assert logs(ci, user) == ["echo ***"]
        assert HeaderEcho.seen == [CI_SECRET]
    finally:
        server.close()
    everything = [line for f in web.list_flows(limit=1000) for line in logs(web, f["id"])]
    assert everything and not [line for line in everything if CI_SECRET in line]
    assert CI_SECRET not in str([web.get_flow(f["id"]) for f in web.list_flows(limit=1000)])


REMOTE_PROBE = """
load("pkg.flowmetal.io/workspace/v1", "workspace", "exec")

def _probe_impl(fctx):
    r = fctx.actions.http("GET", fctx.args.url, check = False)
    print("http", r.ok, r.value.status if r.ok else r.error)
    e = exec(fctx.resources.ws, "sh", "-c", "if [ -e " + fctx.args.probe + " ]; then echo visible; else echo hidden; fi")
    print("home", e.stdout.strip())

probe = flow(implementation = _probe_impl, resources = {"ws": lambda fctx: workspace()})

if __name__ == "__flow__":
    probe(url = fctx().args.url, probe = fctx().args.probe)
"""


def test_connectors_started_elsewhere_apply_the_shared_grids_policy(tmp_path: Path) -> None:
    """`flowmetal connector http|resources` on "another machine", given only the Worker API URL and
    the token file (no --shared, no --sandbox): the grid's policy holds there too, loopback refused
    and exec sandboxed, because connectors take it from the grid."""
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(TOKENS)
    paths = GridPaths(tmp_path / "machine-a")
    project = tmp_path / "project"
    project.mkdir()
    (project / "flowmetal.toml").write_text('[project]\nname = "remote-policy"\n')
    machine_b = tmp_path / "machine-b"
    machine_b.mkdir()
    env = machine_env(machine_b)
    started: list[subprocess.Popen[bytes]] = []
    inward = LoopbackServer(Redirect)  # 127.0.0.1: a shared grid refuses loopback
    try:
        state = start_background(paths, workers=1, tokens=tokens, timeout=60,
                                 layout=Layout(components=frozenset(COMPONENTS) - {"connectors"}, worker_apis=1))
        assert state["isolation"]["shared"] is True
        token_file = machine_b / "worker-api.token"
        shutil.copy(paths.home / TOKEN_FILE, token_file)
        for role in ("clock", "http", "inbox", "resources"):
            log = open(machine_b / f"{role}.log", "wb")
            started.append(subprocess.Popen(
                [sys.executable, "-m", "flowmetal_cli", "connector", role, "--url", ",".join(state["worker_urls"]),
                 "--token-file", str(token_file)], env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=machine_b))
        remote_home = Path(env["FLOWMETAL_HOME"])
        probe = remote_home / "probe.txt"
        wait_until(lambda: remote_home.exists(), 30, "the remote connectors' home")
        probe.write_text("machine b's own file")
        shared = Shared(str(state["url"]), paths, project)
        flow_id = shared.start("web-token", "remote-probe.flow", REMOTE_PROBE,
                               {"url": inward.url, "probe": str(probe)})
        web = shared.client("web-token")
        assert wait_finished(web, flow_id, timeout=60)["status"] == "completed", web.get_flow(flow_id)
        lines = logs(web, flow_id)
    finally:
        inward.close()
        for process in started:
            process.kill()
            process.wait(10)
        stop_grid(paths)
    assert lines == [
        f"http False http: refused: 127.0.0.1:{inward.port} is a loopback address: a shared grid reaches "
        "loopback, link-local and private addresses only where its --http-allow says",
        "home hidden",  # sandboxed: machine B's home is not there for the command
    ], lines
