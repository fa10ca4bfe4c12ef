"""The Client API's answers that are not Flow DB records (those are in ``grid_local/records.py``).

Declared as the return types of the operations, so the OpenAPI document describes every answer.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import TypedDict


class Health(TypedDict):
    ok: bool
    db: str
    auth: bool
    """Whether requests need a bearer token."""


class BundleStored(TypedDict):
    digest: str
    created: bool
    """False when the grid already held this bundle (uploads are idempotent)."""
    entry: str
    files: list[str]


class Cancelled(TypedDict):
    cancelled: list[str]
    """The flow and its unfinished descendants, all now cancelled."""


class MessageSent(TypedDict):
    id: int


class Done(TypedDict):
    ok: bool


class Held(TypedDict):
    flow_id: str
    seq: int
    kind: str


class Process(TypedDict, total=False):
    """A process of the grid as the supervisor published it, with what it holds now."""

    id: str | None
    role: str
    name: str
    pid: int | None
    alive: bool
    flows: int
    held_flows: list[str]
    requests: list[Held]
    remote: bool
    """A worker this grid's supervisor did not start (``flowmetal worker``), known to its Worker API."""
    address: str | None
    """Where such a worker calls the Worker API from."""


Process.__pydantic_config__ = {"extra": "allow"}  # type: ignore[attr-defined]  # the supervisor's fields


class Processes(TypedDict):
    processes: list[Process]


class Killed(TypedDict):
    killed: int
    role: Any
