"""The records that cross a process boundary, typed once.

The Flow DB answers them (``db/rows.py`` converts each row kind in one place), the APIs send
them as JSON, and the Client API publishes them as response models in its OpenAPI document.
They are TypedDicts: plain dicts at run time (no copy on the hot path), with a schema for
readers and for mypy. ``typing_extensions.TypedDict`` because pydantic needs it before 3.12;
this module does not import pydantic itself (the worker and connector processes stay small).
"""

from __future__ import annotations

from typing import Any, Literal

from typing_extensions import NotRequired, TypedDict

FlowStatus = Literal["pending", "running", "waiting", "completed", "failed", "cancelled"]


class FlowError(TypedDict):
    """Why a flow failed or was cancelled (a Starlark traceback when there is one)."""

    message: str
    traceback: NotRequired[str]
    kind: NotRequired[str]


FlowError.__pydantic_config__ = {"extra": "allow"}  # type: ignore[attr-defined]


class FlowRecord(TypedDict):
    """A flow instance: where it starts, who owns it, how it ended."""

    id: str
    parent: str | None
    root: str
    flow: str
    """The flow's name (a root flow: its deployment or entry script)."""
    bundle: str
    entry: dict[str, Any]
    """``{"module": path, "function": name or None, "resources": {...}}``."""
    args: dict[str, Any]
    quota: str
    username: str
    status: FlowStatus
    result: Any
    error: FlowError | None
    created: float
    updated: float
    finished: float | None
    worker: str | None
    """The worker holding its lease, if any."""
    resumes: int


class ListedFlow(FlowRecord):
    """A flow in a list; asked with ``?why=true``, a live flow also says what it is waiting for."""

    why: NotRequired[str]
    """In words, why it is not running now (or on which worker it runs), as ``/why`` gives it."""


class JournalRecord(TypedDict):
    """One action of a flow: its request and, once it arrived, its result."""

    seq: int
    kind: str
    args: Any
    hash: str
    callsite: str
    result: dict[str, Any] | None
    """``{"ok", "value", "error"[, "traceback"]}`` or None while unanswered."""
    requested_at: float | None
    answered_at: float | None
    worker: str | None


class FlowDetail(FlowRecord):
    """A flow as ``inspect`` shows it: its record, its journal and its children's ids."""

    journal: list[JournalRecord]
    children: list[str]
    why: str | None
    """In words, what the flow is waiting for (or how it ended)."""


class WorkerTask(FlowRecord):
    """What a worker receives when it claims a flow: the record, its lease epoch, its journal so far.

    The lease is (this worker, ``epoch``); every write the worker makes names both."""

    epoch: int
    journal: list[JournalRecord]
    caps: dict[str, Any]
    """Limits the worker applies to the evaluation (``eval_budget`` and the quota node setting it)."""


class EventRecord(TypedDict):
    """One fact of the event log (what ``logs``, ``run`` and the TUI follow).

    ``type`` is ``flow`` (a flow's status changed: ``status``, ``name``, ``parent``, and ``result``
    and ``error`` when it ended), ``request`` and ``result`` (a journal entry: ``seq``, ``kind``,
    ``args`` or ``ok``/``error``), or ``log`` (``text``, ``stream``). Other fields may follow."""

    id: int
    flow_id: str
    root: str
    type: str
    at: float
    name: NotRequired[str]
    status: NotRequired[str]
    seq: NotRequired[int]
    kind: NotRequired[str]
    text: NotRequired[str | None]


EventRecord.__pydantic_config__ = {"extra": "allow"}  # type: ignore[attr-defined]  # its fields vary by type


class EventPage(TypedDict):
    events: list[EventRecord]
    cursor: int
    """The id of the last event returned (pass it as ``after`` to continue)."""


class DeploymentRecord(TypedDict):
    name: str
    digest: str
    quota: str
    created: float
    updated: float
