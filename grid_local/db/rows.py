"""Rows of the Flow DB turned into the records the APIs answer (one converter per record)."""

from __future__ import annotations

import uuid
from typing import Any

from grid_local.db.engine import Row, loads
from grid_local.records import DeploymentRecord, EventRecord, FlowRecord, WorkerTask
from grid_local.runtime.journal import JournalEntry

FINISHED = ("completed", "failed", "cancelled")


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def under(quota: str, prefix: str) -> bool:
    """Whether a quota node lies in the subtree at ``prefix``."""
    prefix = prefix.rstrip("/")
    return not prefix or quota == prefix or quota.startswith(prefix + "/")


def flow_json(row: Row) -> FlowRecord:
    return {
        "id": row["id"], "parent": row["parent"], "root": row["root"], "flow": row["name"], "bundle": row["bundle"],
        "entry": loads(row["entry"]), "args": loads(row["args"]), "quota": row["quota"],
        "username": row["username"], "status": row["status"], "result": loads(row["result"]),
        "error": loads(row["error"]), "created": row["created"], "updated": row["updated"],
        "finished": row["finished"], "worker": row["lease_owner"], "resumes": row["resumes"],
    }


def journal_entry(row: Row) -> JournalEntry:
    return JournalEntry(
        seq=row["seq"], kind=row["kind"], args=loads(row["args"]), hash=row["hash"], callsite=row["callsite"],
        result=loads(row["result"]), requested_at=row["requested_at"], answered_at=row["answered_at"],
        worker=row["worker"],
    )


def event_json(row: Row) -> EventRecord:
    event: EventRecord = {**loads(row["data"]), "id": row["id"], "flow_id": row["flow_id"], "root": row["root"],
                          "type": row["kind"], "at": row["at"]}
    return event


def worker_task(row: Row, journal: list[JournalEntry], caps: dict[str, Any]) -> WorkerTask:
    """A claimed flow as its worker receives it (``row`` carries the new lease epoch)."""
    return {**flow_json(row), "epoch": row["lease_epoch"], "journal": [e.to_json() for e in journal], "caps": caps}


def deployment_json(row: Row) -> DeploymentRecord:
    return {"name": row["name"], "digest": row["digest"], "quota": row["quota"], "created": row["created"],
            "updated": row["updated"]}
