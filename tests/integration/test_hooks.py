"""Webhooks on a real grid: signatures checked before anything is written, one flow per delivery,
requests routed to running flows' inboxes, size limits, the CLI and flowmetal.toml."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import Any

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flowmetal_cli.bundle import build_bundle
from grid_local.home import GridPaths
from grid_local.supervisor import start_background
from grid_local.triggers.signatures import sign
from tests.integration.conftest import Grid, grid_env, stop_grid

SECRET = "it-is-a-secret"

STARTED = """
def main():
    request = fctx().args.request
    print("{} {} event={} delivery={}".format(request["method"], request["json"]["action"],
                                              request["headers"].get("x-github-event"), request["delivery"]))

if __name__ == "__flow__":
    main()
"""

LISTENER = """
def main():
    me = fctx()
    print("pr {} waiting".format(me.args.pr))
    request = me.actions.receive(inbox = "github")
    print("pr {} got {}".format(me.args.pr, request["json"]["action"]))

if __name__ == "__flow__":
    main()
"""


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    """One grid for the module; each test uses deployments and hooks of its own names."""
    tmp = tmp_path_factory.mktemp("hooks")
    env = grid_env(tmp)
    paths = GridPaths(Path(env["FLOWMETAL_HOME"]))
    project = tmp / "project"
    project.mkdir()
    (project / "flowmetal.toml").write_text('[project]\nname = "it"\n')
    found: Grid | None = None
    try:
        found = Grid(paths, start_background(paths, workers=2), env, project)
        yield found
    finally:
        if found is not None:
            found.client.close()
        stop_grid(paths)


def deploy(grid: Grid, name: str, source: str) -> None:
    built = build_bundle(grid.write(f"{name}.flow", source))
    if not grid.client.has_bundle(built.digest):
        grid.client.upload_bundle(built.data, built.digest)
    grid.client.deploy(name, built.digest)


def add_hook(grid: Grid, name: str, *options: str) -> None:
    done = subprocess_cli(grid, "hook", "add", name, *options)
    assert done.returncode == 0, done.stderr


def subprocess_cli(grid: Grid, *args: str) -> Any:
    grid.env["HOOK_SECRET"] = SECRET
    return grid.cli(*args)


def post(grid: Grid, name: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{grid.url}/hooks/{name}", content=body, headers=headers, timeout=30)


def github(body: bytes, delivery: str, secret: str = SECRET, event: str = "pull_request") -> dict[str, str]:
    return {"X-Hub-Signature-256": sign(secret, body), "X-GitHub-Delivery": delivery, "X-GitHub-Event": event,
            "Content-Type": "application/json"}


def event_count(grid: Grid) -> int:
    return len(grid.client.events(after=0)["events"])


def root_flows(grid: Grid, deployment: str) -> list[dict[str, Any]]:
    return [f for f in grid.client.list_flows(roots_only=True) if f["flow"] == deployment]


def wait_for(condition: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def test_a_signed_delivery_starts_one_flow_and_a_bad_one_writes_nothing(grid: Grid) -> None:
    deploy(grid, "gh", STARTED)
    add_hook(grid, "gh", "--deployment", "gh", "--secret-env", "HOOK_SECRET")
    body = json.dumps({"action": "opened", "number": 7}).encode()
    before = event_count(grid)

    for headers, reason in (
        (github(body, "d-bad", secret="wrong"), "does not match"),
        ({"X-GitHub-Delivery": "d-missing"}, "missing signature header X-Hub-Signature-256"),
        ({**github(b"{}", "d-other"), "Content-Type": "application/json"}, "does not match"),  # signed another body
    ):
        refused = post(grid, "gh", body, headers)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"] == "unauthorized" and reason in refused.json()["message"]
    assert root_flows(grid, "gh") == [] and event_count(grid) == before  # nothing written at all

    accepted = post(grid, "gh", body, github(body, "d-1"))
    assert accepted.status_code == 202, accepted.text
    flow_id = accepted.json()["flow_id"]
    assert accepted.json()["redelivered"] is False
    flow = grid.wait(flow_id)
    assert flow["status"] == "completed", flow
    assert flow["flow"] == "gh" and flow["quota"] == grid.client.deployments()[0]["quota"]
    assert grid.logs(flow_id) == ["POST opened event=pull_request delivery=d-1"]

    # Replayed (a redelivery, or an attacker resending a captured request): nothing new starts.
    again = post(grid, "gh", body, github(body, "d-1"))
    assert again.status_code == 202 and again.json()["flow_id"] == flow_id and again.json()["redelivered"] is True
    assert [f["id"] for f in root_flows(grid, "gh")] == [flow_id]


def test_concurrent_redeliveries_start_exactly_one_flow(grid: Grid) -> None:
    deploy(grid, "once", STARTED)
    add_hook(grid, "once", "--deployment", "once", "--signature", "hmac-sha256", "--secret-env", "HOOK_SECRET")
    body = json.dumps({"action": "ran"}).encode()
    headers = {"X-Signature-256": sign(SECRET, body), "Idempotency-Key": "key-1"}
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        response = post(grid, "once", body, headers)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["flow_id"] for a in answers}) == 1
    assert sorted(a.json()["redelivered"] for a in answers) == [False] + [True] * 7
    assert len(root_flows(grid, "once")) == 1
    # A new delivery id is a new delivery.
    other = post(grid, "once", body, {**headers, "Idempotency-Key": "key-2"})
    assert other.status_code == 202 and other.json()["flow_id"] != answers[0].json()["flow_id"]


def test_an_inbox_hook_routes_by_a_json_field_to_the_waiting_flow(grid: Grid) -> None:
    deploy(grid, "review", LISTENER)
    add_hook(grid, "merged", "--deployment", "review", "--to", "inbox", "--inbox", "github",
             "--match", "pr=json:pull_request.number", "--secret-env", "HOOK_SECRET")
    flows = {pr: grid.client.start_deployment("review", {"pr": pr})["id"] for pr in (41, 42)}
    for pr, flow_id in flows.items():
        wait_for(lambda: f"pr {pr} waiting" in grid.logs(flow_id), f"flow of pr {pr} waiting")

    unknown = json.dumps({"action": "closed", "pull_request": {"number": 99}}).encode()
    missing = post(grid, "merged", unknown, github(unknown, "d-99"))
    assert missing.status_code == 404 and "pr = 99" in missing.json()["message"]

    body = json.dumps({"action": "closed", "pull_request": {"number": 42}}).encode()
    delivered = post(grid, "merged", body, github(body, "d-42"))
    assert delivered.status_code == 202, delivered.text
    assert delivered.json()["flow_ids"] == [flows[42]]
    assert grid.wait(flows[42])["status"] == "completed"
    assert grid.logs(flows[42]) == ["pr 42 waiting", "pr 42 got closed"]
    again = post(grid, "merged", body, github(body, "d-42"))  # redelivered: no second message
    assert again.json() == {**delivered.json(), "redelivered": True}
    assert grid.client.get_flow(flows[41])["status"] in ("running", "waiting")  # the other PR still waits
    grid.client.cancel(flows[41])


def test_bodies_are_size_limited(grid: Grid) -> None:
    deploy(grid, "big", STARTED)
    add_hook(grid, "big", "--deployment", "big", "--signature", "none")
    large = b'{"action": "x", "pad": "' + b"x" * (1024 * 1024) + b'"}'
    refused = post(grid, "big", large, {})
    assert refused.status_code == 413 and refused.json()["error"] == "too_large"

    def chunks() -> Any:  # no Content-Length: the limit holds while reading
        for start in range(0, len(large), 65536):
            yield large[start:start + 65536]

    chunked = httpx.post(f"{grid.url}/hooks/big", content=chunks(), timeout=30)
    assert chunked.status_code == 413
    assert root_flows(grid, "big") == []
    assert post(grid, "nope", b"{}", {}).status_code == 404


def test_hook_cli_lists_tests_and_removes(grid: Grid) -> None:
    deploy(grid, "cli", STARTED)
    add_hook(grid, "cli", "--deployment", "cli", "--secret-env", "HOOK_SECRET")
    payload = grid.write("push.json", '{"action": "pushed"}')
    listed = subprocess_cli(grid, "hook", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [hook] = [h for h in json.loads(listed.stdout) if h["name"] == "cli"]
    assert hook["url"] == f"{grid.url}/hooks/cli" and hook["secret_source"] == "env:HOOK_SECRET"
    assert "secret" not in hook and hook["has_secret"] is True

    tested = subprocess_cli(grid, "hook", "test", "cli", "--payload", str(payload), "--event", "push",
                            "--delivery", "t-1")
    assert tested.returncode == 0, tested.stderr
    flow_id = tested.stdout.split("flow ")[1].strip()
    assert grid.wait(flow_id)["status"] == "completed"
    assert grid.logs(flow_id) == ["POST pushed event=push delivery=t-1"]
    twice = subprocess_cli(grid, "hook", "test", "cli", "--payload", str(payload), "--delivery", "t-1")
    assert twice.returncode == 0 and "nothing new started" in twice.stdout

    grid.env["WRONG"] = "not-the-secret"
    wrong = grid.cli("hook", "test", "cli", "--payload", str(payload), "--secret-env", "WRONG")
    assert wrong.returncode == 4 and "answered 401" in wrong.stderr

    unsigned = grid.cli("hook", "add", "x", "--deployment", "cli")
    assert unsigned.returncode == 2 and "--signature none" in unsigned.stderr
    removed = grid.cli("hook", "rm", "cli")
    assert removed.returncode == 0, removed.stderr
    assert post(grid, "cli", b"{}", {}).status_code == 404


def test_push_applies_the_hooks_declared_in_flowmetal_toml(grid: Grid) -> None:
    grid.write("secret.txt", SECRET + "\n")
    grid.write("flowmetal.toml", """
        [project]
        name = "it"

        [hooks.from-toml]
        signature = "github"
        secret_file = "secret.txt"
    """)
    deploy(grid, "declared", STARTED)
    done = grid.cli("push", "--name", "declared", "declared.flow")
    assert done.returncode == 0 and "hook from-toml -> deployment declared" in done.stdout, done.stderr
    [hook] = [h for h in grid.client.hooks() if h["name"] == "from-toml"]
    assert hook["name"] == "from-toml" and hook["deployment"] == "declared" and hook["to"] == "start"
    body = b'{"action": "declared"}'
    accepted = post(grid, "from-toml", body, github(body, "toml-1"))
    assert accepted.status_code == 202, accepted.text

    grid.write("flowmetal.toml", '[project]\nname = "it"\n[hooks.bad]\nsignature = "github"\nsecret_env = "UNSET_VAR"\n')
    refused = grid.cli("push", "--name", "declared2", "declared.flow")
    assert refused.returncode == 2 and "[hooks.bad]" in refused.stderr and "UNSET_VAR" in refused.stderr
    assert "declared2" not in [d["name"] for d in grid.client.deployments()]  # nothing was pushed
    grid.write("flowmetal.toml", '[project]\nname = "it"\n')


def test_hooks_and_schedules_count_against_their_quota_node(grid: Grid) -> None:
    deploy(grid, "limited", "fctx().actions.receive()\n")  # live until cancelled
    add_hook(grid, "limited", "--deployment", "limited", "--signature", "none")
    node = grid.client.deployments()[0]["quota"]
    live = len([f for f in grid.client.list_flows() if f["status"] in ("pending", "running", "waiting")])
    set_live_limit(grid, node, live + 1)  # as an admin of its parent would (the local user may not)
    try:
        first = post(grid, "limited", b'{"action": "a"}', {"Idempotency-Key": "q-1"})
        assert first.status_code == 202, first.text
        refused = post(grid, "limited", b'{"action": "b"}', {"Idempotency-Key": "q-2"})
        assert refused.status_code == 429 and refused.json()["error"] == "quota_exceeded", refused.text
        assert refused.headers.get("retry-after")
        assert len(root_flows(grid, "limited")) == 1  # the refusal wrote nothing, not even the delivery id

        grid.client.put_schedule("limited", {"deployment": "limited", "cron": "0 0 1 1 *", "args": {"pr": 1}})
        fired = grid.client.schedule_action("limited", "trigger")
        assert fired["started"] == [] and "live flows" in fired["refused"][0]

        grid.client.cancel(first.json()["flow_id"])
        wait_for(lambda: grid.client.get_flow(first.json()["flow_id"])["status"] == "cancelled", "the cancel")
        again = post(grid, "limited", b'{"action": "b"}', {"Idempotency-Key": "q-2"})  # redelivered, now admitted
        assert again.status_code == 202 and again.json()["redelivered"] is False
        grid.client.cancel(again.json()["flow_id"])
    finally:
        set_live_limit(grid, node, None)
        grid.client.delete_schedule("limited")


def set_live_limit(grid: Grid, node: str, live: int | None) -> None:
    with sqlite3.connect(grid.paths.db, timeout=30) as db:
        db.execute("INSERT INTO quota_nodes (path, live, created, updated) VALUES (?, ?, 0, 0) "
                   "ON CONFLICT(path) DO UPDATE SET live = excluded.live", (node, live))
