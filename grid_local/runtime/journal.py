"""Journal records and the pure rules of replay: canonical requests, hashes, call sites, non-determinism."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from grid_local.errors import ArgumentError, NonDeterminismError
from grid_local.records import JournalRecord

# Kinds the worker answers itself: the request and its result are committed together (no side effect).
LOCAL_KINDS = frozenset({"now", "random", "uuid", "print"})
# Kinds the Flow DB answers in the same transaction as the request (no executor that could die).
ATOMIC_KINDS = frozenset({"run", "send"})
# Kinds answered later, by a connector or by other flows finishing.
DEFERRED_KINDS = frozenset({"wait", "sleep", "receive", "http", "open", "exec"})
# Kinds leased to a connector that performs them: interrupted (never re-run) if it dies holding them.
CONNECTOR_KINDS = frozenset({"http", "open", "exec"})
ALL_KINDS = LOCAL_KINDS | ATOMIC_KINDS | DEFERRED_KINDS

INTERRUPTED = "interrupted: may or may not have taken effect"

MAX_VALUE_BYTES = 4 * 1024 * 1024
"""Largest JSON value the journal holds: an action's arguments, its result, a flow's result."""


def mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def check_size(text: str, what: str) -> str:
    """Refuse a value over MAX_VALUE_BYTES (as canonical JSON), naming it and the limit."""
    if len(text) <= MAX_VALUE_BYTES // 4:  # no UTF-8 character takes more than 4 bytes
        return text
    size = len(text.encode())
    if size > MAX_VALUE_BYTES:
        raise ArgumentError(f"{what} is {mib(size)}, over the {MAX_VALUE_BYTES // (1024 * 1024)} MiB limit")
    return text


def canonical_json(value: Any) -> str:
    """One spelling for each JSON value: sorted keys, no spaces, finite numbers only."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"not JSON-representable: {exc}") from None


MAX_JSON_DEPTH = 100
"""How deeply lists and objects may nest in a value that crosses flows and the journal."""


def check_json(value: Any, what: str) -> Any:
    """Refuse anything that is not plain JSON data (the only thing that crosses flows and the journal)."""
    def walk(v: Any, path: str, depth: int = 0) -> None:
        if v is None or isinstance(v, (bool, int)):
            return
        if isinstance(v, str):
            try:
                v.encode()
            except UnicodeEncodeError:
                raise ArgumentError(f"{what}: {path or 'value'} is not valid Unicode (a lone surrogate)") from None
            return
        if depth >= MAX_JSON_DEPTH and isinstance(v, (list, tuple, dict)):
            raise ArgumentError(f"{what}: nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(v, float):
            if not math.isfinite(v):
                raise ArgumentError(f"{what}: {path or 'value'} is {v}, which JSON cannot hold")
            return
        if isinstance(v, (list, tuple)):
            for i, item in enumerate(v):
                walk(item, f"{path}[{i}]", depth + 1)
            return
        if isinstance(v, dict):
            for key, item in v.items():
                if not isinstance(key, str):
                    raise ArgumentError(f"{what}: {path or 'value'} has a non-string key {key!r}")
                walk(item, f"{path}.{key}" if path else key, depth + 1)
            return
        raise ArgumentError(f"{what}: {path or 'value'} is a {type(v).__name__}, which is not JSON-representable")

    walk(value, "")
    return value


def request_hash(kind: str, args_json: str) -> str:
    return hashlib.sha256(f"{kind}\n{args_json}".encode()).hexdigest()[:32]


@dataclass
class JournalEntry:
    """One action of a flow: its request and, once it arrived, its result."""

    seq: int
    kind: str
    args: Any
    hash: str
    callsite: str = ""
    result: dict[str, Any] | None = None
    requested_at: float | None = None
    answered_at: float | None = None
    worker: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def answered(self) -> bool:
        return self.result is not None

    def to_json(self) -> JournalRecord:
        return {
            "seq": self.seq, "kind": self.kind, "args": self.args, "hash": self.hash, "callsite": self.callsite,
            "result": self.result, "requested_at": self.requested_at, "answered_at": self.answered_at,
            "worker": self.worker,
        }

    @classmethod
    def from_json(cls, data: JournalRecord | dict[str, Any]) -> "JournalEntry":
        return cls(
            seq=data["seq"], kind=data["kind"], args=data["args"], hash=data["hash"],
            callsite=data.get("callsite", ""), result=data.get("result"), requested_at=data.get("requested_at"),
            answered_at=data.get("answered_at"), worker=data.get("worker"),
        )


def ok(value: Any = None) -> dict[str, Any]:
    return {"ok": True, "value": value, "error": None}


def err(message: str, traceback: str = "") -> dict[str, Any]:
    return {"ok": False, "value": None, "error": message, "traceback": traceback}


_FRAME = re.compile(r"^\s*\* (?P<file>[^:\n]+):(?P<line>\d+), in (?P<fn>\S+)", re.M)
RUNTIME_FILES = frozenset({"prelude.star", "http.star", "workspace.star", "docker.star", "<prelude>", "<flow entry>"})


def user_callsite(call_stack: str) -> str:
    """The innermost frame of user code (``file:line``) in a Starlark call_stack() text."""
    frames = [m for m in _FRAME.finditer(call_stack) if m["file"] not in RUNTIME_FILES]
    if not frames:
        return ""
    last = frames[-1]
    return f"{last['file']}:{last['line']}"


def check_replay(entry: JournalEntry, kind: str, args_json: str, digest: str, callsite: str) -> None:
    """Raise NonDeterminismError when a replayed request differs from the journal at its position."""
    if entry.kind == kind and entry.hash == digest:
        return
    recorded = f"{entry.kind}({canonical_json(entry.args)})" + (f" at {entry.callsite}" if entry.callsite else "")
    replayed = f"{kind}({args_json})" + (f" at {callsite}" if callsite else "")
    raise NonDeterminismError(
        f"non-determinism at journal entry {entry.seq}: the journal recorded {recorded}, "
        f"but replaying the script requested {replayed}"
    )
