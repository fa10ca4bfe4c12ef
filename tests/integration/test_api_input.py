"""Bad input to the Client and Worker APIs: a 4xx with a JSON message, and nothing written."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import httpx
import pytest

from grid_local.api.worker_auth import auth_headers
from grid_local.bundle_format import write_bundle
from tests.integration.conftest import Grid


def _counts(grid: Grid) -> dict[str, int]:
    with sqlite3.connect(grid.paths.db) as db:
        return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("bundles", "flows", "journal", "messages", "deployments", "injections")}


def _until_its_first_action(grid: Grid, flow_id: str) -> None:
    """Wait until the flow's first action is journaled (it then waits, and writes nothing more)."""
    deadline = time.monotonic() + 15
    while not grid.client.get_flow(flow_id)["journal"]:
        assert time.monotonic() < deadline, "the flow never reached its first action"
        time.sleep(0.02)


def _assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "message"} and body["message"]


@pytest.fixture
def api(grid: Grid) -> Any:
    with httpx.Client(base_url=grid.url) as client:
        yield client


def test_client_api_refuses_bad_input_without_writing(grid: Grid, api: httpx.Client) -> None:
    data, digest = write_bundle("a.flow", {"a.flow": 'print("hi")\n'}, {})
    assert api.put(f"/v1/bundles/{digest}", content=data).status_code == 201
    flow_id = api.post("/v1/flows", json={"bundle": digest}).json()["id"]
    grid.wait(flow_id)
    before = _counts(grid)

    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", "/v1/flows", {"content": b"{not json"}, 422),
        ("POST", "/v1/flows", {"json": {"bundle": 42}}, 422),
        ("POST", "/v1/flows", {"json": {"bundle": digest, "args": [1, 2]}}, 422),
        ("POST", "/v1/flows", {"json": {"bundle": "sha256:" + "0" * 64}}, 404),
        ("GET", "/v1/flows/nope", {}, 404),
        ("GET", "/v1/flows", {"params": {"status": "sleeping"}}, 422),
        ("GET", "/v1/flows", {"params": {"limit": "lots"}}, 422),
        ("POST", "/v1/flows/nope/cancel", {}, 404),
        ("POST", f"/v1/flows/{flow_id}/cancel", {}, 409),  # already finished
        ("POST", "/v1/flows/nope/messages", {"json": {"value": 1}}, 404),
        ("POST", f"/v1/flows/{flow_id}/messages", {"json": {"inbox": ""}}, 422),
        ("POST", f"/v1/flows/{flow_id}/inject", {"json": {"action": "explode"}}, 422),
        ("PUT", f"/v1/bundles/{digest[:-4]}beef", {"content": data}, 400),  # digest mismatch
        ("PUT", "/v1/bundles/sha256:abc", {"content": b"garbage"}, 400),
        ("PUT", "/v1/deployments/x", {"json": {"digest": "sha256:" + "1" * 64}}, 404),
        ("POST", "/v1/deployments/none/start", {"json": {}}, 404),
        ("POST", "/v1/processes/1/kill", {}, 404),
        ("POST", "/v1/flows", {"content": b"x" * (2 * 1024 * 1024),
                               "headers": {"content-type": "application/json"}}, 413),
    ]
    for method, path, kwargs, status in cases:
        _assert_error(api.request(method, path, **kwargs), status)
    assert _counts(grid) == before


def test_worker_api_refuses_bad_input_without_writing(grid: Grid) -> None:
    before = _counts(grid)
    with httpx.Client(base_url=grid.state["worker_url"], headers=auth_headers(grid.paths.home)) as api:
        cases: list[tuple[str, str, dict[str, Any], int]] = [
            ("POST", "/v1/workers/claim", {"content": b"[oops"}, 400),
            ("POST", "/v1/workers/claim", {"json": {"worker": 7}}, 400),
            ("POST", "/v1/workers/claim", {"json": ["not", "an", "object"]}, 400),
            ("POST", "/v1/flows/nope/journal", {"json": {"worker": "w", "epoch": 1, "entry": {
                "seq": 1, "kind": "now", "hash": "h"}}}, 404),
            ("POST", "/v1/flows/nope/journal", {"json": {"worker": "w", "epoch": 1, "entry": {
                "seq": 1, "kind": "teleport", "hash": "h"}}}, 400),
            ("GET", "/v1/flows/nope/journal/1", {}, 404),
            ("POST", "/v1/flows/nope/finish", {"json": {"worker": "w", "epoch": 1, "status": "exploded"}}, 400),
            ("POST", "/v1/connectors/results", {"json": {"flow_id": "x", "seq": "one", "result": {}}}, 400),
            ("POST", "/v1/workers/claim", {"content": b"{" + b" " * (5 * 1024 * 1024) + b"}"}, 400),
            ("GET", "/v1/no/such/path", {}, 404),
            ("GET", "/v1/workers/claim", {}, 405),
        ]
        for method, path, kwargs, status in cases:
            _assert_error(api.request(method, path, **kwargs), status)
    assert _counts(grid) == before


def test_stale_worker_cannot_write(grid: Grid) -> None:
    """Appends are conditional on the lease: a worker that does not hold the flow is refused (409)."""
    data, digest = write_bundle("a.flow", {"a.flow": "fctx().actions.sleep(30)\n"}, {})
    grid.client.upload_bundle(data, digest)
    flow_id = grid.client.start_flow(digest, {})["id"]
    _until_its_first_action(grid, flow_id)
    before = _counts(grid)
    with httpx.Client(base_url=grid.state["worker_url"], headers=auth_headers(grid.paths.home)) as api:
        response = api.post(f"/v1/flows/{flow_id}/journal", json={"worker": "impostor.1", "epoch": 1, "entry": {
            "seq": 2, "kind": "now", "hash": "h", "result": {"ok": True, "value": 1}}})
        _assert_error(response, 409)
        response = api.post(f"/v1/flows/{flow_id}/finish", json={"worker": "impostor.1", "epoch": 1,
                                                                  "status": "completed"})
        _assert_error(response, 409)
    assert _counts(grid) == before


def test_openapi_document_is_published(api: httpx.Client) -> None:
    document = api.get("/openapi.json").json()
    assert document["info"]["title"] == "Flowmetal Client API"
    assert {"/v1/flows", "/v1/flows/{flow_id}", "/v1/events", "/v1/bundles/{digest}"} <= set(document["paths"])


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"x": value}
    return value


def test_input_is_validated_before_anything_is_written(grid: Grid, api: httpx.Client) -> None:
    """Every refusal is a 4xx with exactly {error, message}, and leaves the Flow DB as it was."""
    data, digest = write_bundle("a.flow", {"a.flow": "fctx().actions.receive()\n"}, {})
    assert api.put(f"/v1/bundles/{digest}", content=data).status_code == 201
    flow_id = api.post("/v1/flows", json={"bundle": digest}).json()["id"]
    _until_its_first_action(grid, flow_id)  # (its receive() is a write of its own, not of a refused request)
    before = _counts(grid)

    def chunked_args() -> Any:  # no Content-Length: the limit must hold on the bytes read
        yield b'{"bundle": "' + digest.encode() + b'", "args": {"blob": "'
        for _ in range(20):
            yield b"x" * (1024 * 1024)
        yield b'"}}'

    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", "/v1/flows", {"content": chunked_args(), "headers": {"content-type": "application/json"}}, 413),
        ("POST", "/v1/flows", {"json": {"bundle": digest, "args": _nested(900)}}, 422),
        ("POST", f"/v1/flows/{flow_id}/messages", {"json": {"value": _nested(900)}}, 422),
        ("GET", "/v1/events", {"params": {"after": str(10**30)}}, 422),
        ("GET", "/v1/events", {"params": {"after": "-1"}}, 422),
        ("GET", "/v1/no/such/path", {}, 404),
        ("DELETE", "/v1/flows", {}, 405),
        ("POST", "/v1/flows", {"json": {"bundle": digest, "args": "not an object"}}, 422),
        ("POST", "/v1/flows", {"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}, 422),
    ]
    for method, path, kwargs, status in cases:
        response = api.request(method, path, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        body = response.json()
        assert set(body) == {"error", "message"} and body["message"], (method, path, body)
    assert _counts(grid) == before
    assert grid.client.get_flow(flow_id)["status"] != "failed"
