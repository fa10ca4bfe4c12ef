"""The debugger's blocking side: one place that talks to the grid through ``GridClient``.

Everything here blocks and is called from Textual thread workers, never from the UI thread. A
client whose grid stopped answering is dropped, and the next call asks the factory for a new one
(the local grid may have come back at another URL).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from flowmetal_cli.bundle import build_bundle
from flowmetal_cli.client import ClientError, GridClient, GridUnreachable
from grid_local.bundle_format import read_bundle

T = TypeVar("T")
EVENT_PAGE = 1000  # the Client API returns at most this many events per call


@dataclass(frozen=True)
class FlowDetail:
    """A flow's record with its journal and children, its root's event history and its bundle's files."""

    flow: dict[str, Any]
    journal: list[dict[str, Any]]
    events: list[dict[str, Any]] | None
    files: dict[str, str]


@dataclass(frozen=True)
class PushTarget:
    """Where the push dialog sends a bundle: a context, and the deployment name to register there."""

    context: str
    name: str


class GridSession:
    """A lazily made, shared client with a cache of bundle sources (bundles never change)."""

    def __init__(self, factory: Callable[[], GridClient]) -> None:
        self.factory = factory
        self._client: GridClient | None = None
        self._lock = threading.Lock()
        self._files: dict[str, dict[str, str]] = {}

    def client(self) -> GridClient:
        with self._lock:
            if self._client is None:
                self._client = self.factory()
            return self._client

    def call(self, work: Callable[[GridClient], T]) -> T:
        client = self.client()
        try:
            return work(client)
        except GridUnreachable:
            self.drop(client)
            raise

    def drop(self, client: GridClient | None = None) -> None:
        with self._lock:
            if self._client is not None and (client is None or client is self._client):
                self._client.close()
                self._client = None

    @property
    def context(self) -> str:
        with self._lock:
            return self._client.context if self._client else "?"

    def describe(self) -> str:
        with self._lock:
            return f"{self._client.context} · {self._client.url}" if self._client else "not connected"

    # -- reads -------------------------------------------------------------------------------

    def files(self, digest: str) -> dict[str, str]:
        if digest not in self._files:
            data = self.call(lambda c: c.get_bundle(digest))
            self._files[digest] = dict(read_bundle(data).files)
        return self._files[digest]

    def detail(self, flow_id: str, with_events: bool) -> FlowDetail:
        record = self.call(lambda c: c.get_flow(flow_id))
        journal = list(record.pop("journal", []) or [])
        events = self.root_events(str(record["root"])) if with_events else None
        try:
            files = self.files(str(record["bundle"]))
        except ClientError:
            files = {}
        return FlowDetail(record, journal, events, files)

    def root_events(self, root: str) -> list[dict[str, Any]]:
        """The whole event history of one flow tree (its flow and log events; requests are in the journal)."""
        found: list[dict[str, Any]] = []
        cursor = 0
        while True:
            page = self.call(lambda c: c.events(after=cursor, root=root))
            found.extend(e for e in page["events"] if e.get("type") in ("flow", "log"))
            if len(page["events"]) < EVENT_PAGE or page["cursor"] == cursor:
                return found
            cursor = page["cursor"]

    def processes(self) -> list[dict[str, Any]]:
        return self.call(lambda c: c.processes())

    def flows(self, limit: int = 500) -> list[dict[str, Any]]:
        return self.call(lambda c: c.list_flows(limit=limit, why=True))  # live flows say what they wait for

    def quota_tree(self) -> dict[str, Any]:
        """The caller's quota subtree: each node's limits and usage (``GET /v1/quota/tree``)."""
        return self.call(lambda c: c.quota_tree())

    # -- operations ----------------------------------------------------------------------------

    def start_script(self, path: Path, args: dict[str, Any] | None = None) -> dict[str, Any]:
        built = build_bundle(path)
        if not self.call(lambda c: c.has_bundle(built.digest)):
            self.call(lambda c: c.upload_bundle(built.data, built.digest))
        self._files[built.digest] = dict(built.files)
        return self.call(lambda c: c.start_flow(built.digest, args or {}, name=path.name))

    def rerun(self, flow: dict[str, Any]) -> dict[str, Any]:
        return self.call(lambda c: c.start_flow(str(flow["bundle"]), dict(flow.get("args") or {}), name=flow.get("flow")))

    def push(self, flow: dict[str, Any], target: GridClient, name: str) -> dict[str, Any]:
        """Copy the flow's bundle to ``target`` (unless it holds it) and register it there as ``name``."""
        digest = str(flow["bundle"])
        if not target.has_bundle(digest):
            data = self.call(lambda c: c.get_bundle(digest))
            target.upload_bundle(data, digest)
        return target.deploy(name, digest)


def latest_cursor(client: GridClient) -> int:
    """The id of the grid's newest event, found without reading the whole event log.

    Any cursor gives a page of at most ``EVENT_PAGE`` events after it; a short page ends the log.
    Gallop forward until a cursor has nothing after it, then bisect: ``low`` is an id known to
    exist, nothing lies after ``high``, and the newest id is between them.
    """
    page = client.events(after=0)
    if len(page["events"]) < EVENT_PAGE:
        return int(page["cursor"])
    low, step = int(page["cursor"]), EVENT_PAGE
    high: int | None = None
    while high is None:
        page = client.events(after=low + step)
        if not page["events"]:
            high = low + step
        elif len(page["events"]) < EVENT_PAGE:
            return int(page["cursor"])
        else:
            low, step = int(page["cursor"]), step * 2
    while low < high:
        middle = (low + high + 1) // 2
        page = client.events(after=middle - 1)
        if not page["events"]:
            high = middle - 1
        elif len(page["events"]) < EVENT_PAGE:
            return int(page["cursor"])
        else:
            low = int(page["cursor"])
    return low
