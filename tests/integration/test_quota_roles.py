"""Roles on every Client API endpoint, on a real shared grid with a tokens file.

Tokens: ops admin of /, ann admin of /acme, alice and bob members of /acme/ci, vic viewer of
/acme, otto admin of /other. Every endpoint of the OpenAPI document is in the table below (a new
endpoint without a row fails the coverage test); each refusal is a 403 that changes no row. A flow
or deployment outside the caller's subtree answers 404, exactly as an unknown one, and changes no row.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowmetal_cli.bundle import build_bundle
from grid_local.home import GridPaths
from grid_local.supervisor import free_port, start_background
from tests.helpers import write_file
from tests.integration.conftest import stop_grid

USERS = {"ops": ("/", "admin"), "ann": ("/acme", "admin"), "alice": ("/acme/ci", "member"),
         "bob": ("/acme/ci", "member"), "vic": ("/acme", "viewer"), "otto": ("/other", "admin")}
TABLES = ("flows", "journal", "messages", "injections", "bundles", "deployments", "hooks", "schedules",
          "quota_nodes", "schedule_fires", "hook_deliveries")

WAITER = """
if __name__ == "__flow__":
    fctx().actions.receive(inbox = "go")
"""


@dataclass
class Shared:
    url: str
    db: Path
    digest: str
    bundle: bytes
    flows: dict[str, str] = field(default_factory=dict)

    def call(self, user: str | None, method: str, path: str, body: Any = None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer token-{user}"} if user else {}
        if method == "PUT" and path.startswith("/v1/bundles/"):
            return httpx.put(self.url + path, content=self.bundle, headers=headers, timeout=30)
        return httpx.request(method, self.url + path, json=body, params=params or None, headers=headers, timeout=30)

    def counts(self) -> dict[str, int]:
        with sqlite3.connect(self.db) as connection:
            return {t: connection.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    tmp = tmp_path_factory.mktemp("roles")
    tokens = tmp / "tokens.toml"
    tokens.write_text("".join(f'[tokens."token-{user}"]\nuser = "{user}"\nquota = "{node}"\nrole = "{role}"\n\n'
                              for user, (node, role) in USERS.items()))
    paths = GridPaths(tmp / "home")
    built = build_bundle(write_file(tmp / "project", "waiter.flow", WAITER))
    try:
        state = start_background(paths, workers=1, listen=f"127.0.0.1:{free_port()}", tokens=tokens)
        found = Shared(str(state["url"]), paths.db, built.digest, built.data)
        assert found.call("alice", "PUT", f"/v1/bundles/{built.digest}").status_code == 201
        for user in ("alice", "bob"):
            started = found.call(user, "POST", "/v1/flows", {"bundle": built.digest, "args": {}})
            assert started.status_code == 201, started.text
            found.flows[user] = started.json()["id"]
        assert found.call("alice", "PUT", "/v1/deployments/dep", {"digest": built.digest}).status_code == 200
        assert found.call("alice", "PUT", "/v1/hooks/h", {"deployment": "dep", "signature": "none"}).status_code == 200
        assert found.call("alice", "PUT", "/v1/schedules/s", {"deployment": "dep", "cron": "0 0 1 1 *"}).status_code == 200
        yield found
    finally:
        stop_grid(paths)


# (method, path template, concrete path, body or None, {user: expected status}); users left out
# are not tried. The rows run in order: writes that succeed come after the refusals they follow.
A = "{A}"
ROWS: list[tuple[str, str, str, Any, dict[str, int]]] = [
    ("GET", "/v1/health", "/v1/health", None, {u: 200 for u in USERS}),
    ("GET", "/v1/whoami", "/v1/whoami", None, {u: 200 for u in USERS}),
    ("PUT", "/v1/bundles/{digest}", "/v1/bundles/{D}", None, {"vic": 403, "alice": 201, "otto": 201}),
    ("HEAD", "/v1/bundles/{digest}", "/v1/bundles/{D}", None, {"vic": 200, "otto": 200}),
    ("GET", "/v1/bundles/{digest}", "/v1/bundles/{D}", None, {"vic": 200}),
    ("POST", "/v1/flows", "/v1/flows", {"bundle": "{D}", "quota": "/acme/ci/sub"}, {"vic": 403, "alice": 403, "otto": 403}),
    ("POST", "/v1/flows", "/v1/flows", {"bundle": "{D}"}, {"vic": 403}),
    ("GET", "/v1/flows", "/v1/flows", None, {u: 200 for u in USERS}),
    ("GET", "/v1/flows/{flow_id}", f"/v1/flows/{A}", None,
     {"alice": 200, "bob": 403, "ann": 200, "vic": 200, "ops": 200, "otto": 404}),
    ("GET", "/v1/flows/{flow_id}/why", f"/v1/flows/{A}/why", None, {"alice": 200, "bob": 403, "vic": 200, "otto": 404}),
    ("GET", "/v1/events", "/v1/events?root={A}", None, {"alice": 200, "bob": 403, "vic": 200, "otto": 404}),
    ("POST", "/v1/flows/{flow_id}/messages", f"/v1/flows/{A}/messages", {"value": 1, "inbox": "other"},
     {"bob": 403, "vic": 403, "otto": 404, "alice": 201, "ann": 201}),
    ("POST", "/v1/flows/{flow_id}/inject", f"/v1/flows/{A}/inject", {"action": "delay", "seconds": 0},
     {"bob": 403, "vic": 403, "otto": 404}),
    ("GET", "/v1/processes", "/v1/processes", None, {"vic": 200, "alice": 200}),
    ("POST", "/v1/processes/{pid}/kill", "/v1/processes/1/kill", None, {"ops": 403, "vic": 403}),
    ("PUT", "/v1/deployments/{name}", "/v1/deployments/vics", {"digest": "{D}"}, {"vic": 403}),
    ("GET", "/v1/deployments", "/v1/deployments", None, {"vic": 200}),
    ("POST", "/v1/deployments/{name}/start", "/v1/deployments/dep/start", {"args": {}}, {"vic": 403, "otto": 404}),
    ("POST", "/hooks/{name}", "/hooks/nope", None, {"vic": 404}),
    ("PUT", "/v1/hooks/{name}", "/v1/hooks/h", {"deployment": "dep", "signature": "none"}, {"vic": 403, "otto": 404}),
    ("GET", "/v1/hooks", "/v1/hooks", None, {"vic": 200}),
    ("GET", "/v1/hooks/{name}", "/v1/hooks/h", None, {"vic": 200, "otto": 404}),
    ("DELETE", "/v1/hooks/{name}", "/v1/hooks/h", None, {"vic": 403, "otto": 404}),
    ("PUT", "/v1/schedules/{name}", "/v1/schedules/s", {"deployment": "dep", "cron": "0 0 1 1 *"}, {"vic": 403, "otto": 404}),
    ("GET", "/v1/schedules", "/v1/schedules", None, {"vic": 200}),
    ("GET", "/v1/schedules/{name}", "/v1/schedules/s", None, {"vic": 200, "otto": 404}),
    ("POST", "/v1/schedules/{name}/pause", "/v1/schedules/s/pause", None, {"vic": 403, "otto": 404}),
    ("POST", "/v1/schedules/{name}/resume", "/v1/schedules/s/resume", None, {"vic": 403, "otto": 404}),
    ("POST", "/v1/schedules/{name}/trigger", "/v1/schedules/s/trigger", None, {"vic": 403, "otto": 404}),
    ("DELETE", "/v1/schedules/{name}", "/v1/schedules/s", None, {"vic": 403, "otto": 404}),
    ("GET", "/v1/quota/tree", "/v1/quota/tree", None, {u: 200 for u in USERS}),
    ("GET", "/v1/quota/tree", "/v1/quota/tree?node=/acme", None, {"vic": 200, "otto": 403, "alice": 403}),
    ("GET", "/v1/quota/nodes/{path}", "/v1/quota/nodes/acme/ci", None, {"vic": 200, "alice": 200, "otto": 403}),
    ("PUT", "/v1/quota/nodes/{path}", "/v1/quota/nodes/acme/ci", {"running": 5},
     {"alice": 403, "vic": 403, "otto": 403, "ann": 200}),
    ("PUT", "/v1/quota/nodes/{path}", "/v1/quota/nodes/acme", {"running": 9}, {"ann": 403, "ops": 200}),
    ("PUT", "/v1/secrets/{name}", "/v1/secrets/tok", {"value": "v"}, {"vic": 403, "alice": 200, "otto": 200}),
    ("PUT", "/v1/secrets/{name}", "/v1/secrets/tok", {"value": "v", "quota": "/acme/ci"},
     {"otto": 403, "vic": 403, "ann": 200}),
    ("GET", "/v1/secrets", "/v1/secrets", None, {u: 200 for u in USERS}),
    ("DELETE", "/v1/secrets/{name}", "/v1/secrets/tok", None, {"vic": 403, "otto": 200, "alice": 200, "bob": 404}),
    ("POST", "/v1/quota/cancel", "/v1/quota/cancel", {"node": "/acme"}, {"vic": 403, "otto": 403, "alice": 403}),
    ("POST", "/v1/flows/{flow_id}/cancel", f"/v1/flows/{A}/cancel", None, {"bob": 403, "vic": 403, "otto": 404}),
]


def _fill(value: Any, shared: Shared) -> Any:
    if isinstance(value, str):
        return value.replace("{A}", shared.flows["alice"]).replace("{D}", shared.digest)
    if isinstance(value, dict):
        return {k: _fill(v, shared) for k, v in value.items()}
    return value


def test_every_endpoint_has_a_row(shared: Shared) -> None:
    document = httpx.get(shared.url + "/openapi.json", headers={"Authorization": "Bearer token-ops"}).json()
    endpoints = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert endpoints == {(row[0], row[1]) for row in ROWS}


@pytest.mark.parametrize("row", ROWS, ids=[f"{r[0]} {r[2]}" for r in ROWS])
def test_each_role_on_each_endpoint(shared: Shared, row: tuple[str, str, str, Any, dict[str, int]]) -> None:
    method, _, path, body, expected = row
    path, body = _fill(path, shared), _fill(body, shared)
    for user, status in expected.items():
        before = shared.counts() if status in (403, 404) else None
        answer = shared.call(user, method, path.split("?")[0], body,
                             **dict(p.split("=", 1) for p in path.split("?")[1].split("&")) if "?" in path else {})
        assert answer.status_code == status, (user, method, path, answer.text)
        if status in (403, 404):
            assert answer.json()["error"] == ("forbidden" if status == 403 else "not_found") and answer.json()["message"]
            assert shared.counts() == before, f"a refused {method} {path} by {user} changed rows"


def test_members_see_and_cancel_only_their_own_and_admins_their_subtree(shared: Shared) -> None:
    alice_sees = {f["id"] for f in shared.call("alice", "GET", "/v1/flows").json()}
    assert shared.flows["alice"] in alice_sees and shared.flows["bob"] not in alice_sees
    assert {shared.flows["alice"], shared.flows["bob"]} <= {f["id"] for f in shared.call("vic", "GET", "/v1/flows").json()}
    assert shared.call("otto", "GET", "/v1/flows").json() == []

    # bob's bulk cancel of his node takes only his own flows; ann's (admin of /acme) takes the rest
    cancelled = shared.call("bob", "POST", "/v1/quota/cancel", {"node": "/acme/ci"}).json()["cancelled"]
    assert shared.flows["bob"] in cancelled and shared.flows["alice"] not in cancelled
    cancelled = shared.call("ann", "POST", "/v1/quota/cancel", {"node": "/acme"}).json()["cancelled"]
    assert shared.flows["alice"] in cancelled
    deadline = time.monotonic() + 20
    while shared.call("alice", "GET", f"/v1/flows/{shared.flows['alice']}").json()["status"] != "cancelled":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_webhook_start_over_a_hard_limit_is_refused_and_writes_nothing(shared: Shared) -> None:
    assert shared.call("ann", "PUT", "/v1/quota/nodes/acme/ci", {"rate": 0}).status_code == 200
    try:
        assert shared.call("alice", "PUT", "/v1/hooks/hk", {"deployment": "dep", "signature": "none"}).status_code == 200
        before = shared.counts()
        refused = httpx.post(shared.url + "/hooks/hk", content=b"{}", headers={"X-GitHub-Delivery": "d-1"})
        assert refused.status_code == 429 and refused.headers["retry-after"]
        message = refused.json()["message"]
        assert message.startswith("quota /acme/ci: ") and message.endswith(" of 0 flows started per minute")
        assert shared.counts() == before
        refused = shared.call("alice", "POST", "/v1/flows", {"bundle": shared.digest})
        assert refused.status_code == 429
    finally:
        shared.call("ann", "PUT", "/v1/quota/nodes/acme/ci", {"rate": None})
