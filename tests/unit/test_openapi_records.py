"""The Client API publishes a response model for every JSON answer, built from the typed records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from grid_local.api.client_api import create_app
from grid_local.home import GridPaths

BINARY = {("get", "/v1/bundles/{digest}"), ("head", "/v1/bundles/{digest}")}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return create_app(GridPaths(tmp_path_factory.mktemp("home"))).openapi()


def _success_schemas(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith("2") and (method, path) not in BINARY:
                    found.append((method, path, response.get("content", {}).get("application/json", {}).get("schema")))
    return found


# The operations whose answers are the Flow DB's records. Those of webhooks, schedules, quotas and
# /why (api/hooks.py, api/schedules.py, api/quotas.py) are not typed yet.
TYPED = [
    ("get", "/v1/health"), ("get", "/v1/whoami"), ("put", "/v1/bundles/{digest}"), ("post", "/v1/flows"),
    ("get", "/v1/flows"), ("get", "/v1/flows/{flow_id}"), ("post", "/v1/flows/{flow_id}/cancel"),
    ("post", "/v1/flows/{flow_id}/messages"), ("get", "/v1/events"), ("post", "/v1/flows/{flow_id}/inject"),
    ("get", "/v1/processes"), ("post", "/v1/processes/{pid}/kill"), ("put", "/v1/deployments/{name}"),
    ("get", "/v1/deployments"), ("post", "/v1/deployments/{name}/start"),
]


def test_every_json_answer_of_the_flow_and_grid_operations_is_a_named_model(document: dict[str, Any]) -> None:
    schemas = {(m, p): s for m, p, s in _success_schemas(document)}
    assert set(TYPED) <= set(schemas), set(TYPED) - set(schemas)
    untyped = [f"{m.upper()} {p}" for m, p in TYPED
               if not schemas[(m, p)] or "$ref" not in schemas[(m, p)].get("items", schemas[(m, p)])]
    assert untyped == []


def test_the_records_are_published_with_their_fields(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert {"id", "parent", "root", "status", "error", "worker"} <= set(schemas["FlowRecord"]["required"])
    assert schemas["FlowRecord"]["properties"]["status"]["enum"] == [
        "pending", "running", "waiting", "completed", "failed", "cancelled"]
    assert {"journal", "children"} <= set(schemas["FlowDetail"]["required"])
    assert {"seq", "kind", "args", "hash", "result"} <= set(schemas["JournalRecord"]["required"])
    assert schemas["EventRecord"]["additionalProperties"] is True  # each type of event adds its own fields
    assert schemas["EventPage"]["properties"]["events"]["items"] == {"$ref": "#/components/schemas/EventRecord"}
