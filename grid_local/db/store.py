"""The Flow DB on SQLite (aiosqlite): flows, journals, bundles, inboxes and the event log.

Every write is one ``BEGIN IMMEDIATE`` transaction behind a per-process lock (one writer
connection per process, WAL, a busy timeout for the other processes). Journal appends are
conditional on the writer's lease and on the expected sequence number, so a stale worker can
never write. Results are recorded at most once (``WHERE result IS NULL``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import aiosqlite

from grid_local.db.schema import MIGRATIONS
from grid_local.db.triggers import TriggerStore
from grid_local.errors import LeaseLostError, NotFoundError, StoreError
from grid_local.runtime import journal as jr
from grid_local.runtime.journal import JournalEntry

FINISHED = ("completed", "failed", "cancelled")
LEASE_SECONDS = 10.0
EXECUTOR_GRACE = 5.0
BUSY_SECONDS = 30.0
LOG_INBOXES = ("_stdout", "_stderr")


class Appended(NamedTuple):
    result: dict[str, Any] | None
    """The entry's result when it was answered in the append's transaction."""
    delay: float
    """Seconds a 'delay' failure injection holds the answer back."""


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class FlowStore:
    """One process's connection to the Flow DB."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        self._write_lock = asyncio.Lock()
        self.on_commit: list[Any] = []  # callables(notes) run after each commit of this process
        self.notes: set[tuple[Any, ...]] = set()  # what the current transaction changed, for notifications
        self._events: list[tuple[Any, ...]] = []  # the current transaction's events, written at commit
        self.triggers = TriggerStore(self)  # webhooks and schedules (db/triggers.py)

    @classmethod
    async def open(cls, path: Path) -> "FlowStore":
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(str(path), isolation_level=None)
        db.row_factory = aiosqlite.Row
        for pragma in ("busy_timeout=10000", "journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            await db.execute(f"PRAGMA {pragma}")
        store = cls(db, path)
        await store._migrate()
        return store

    async def close(self) -> None:
        await self.db.close()

    async def _migrate(self) -> None:
        async with self.write() as db:
            version = (await self._the("PRAGMA user_version"))[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in _statements(script):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {number}")

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            await self._begin_immediate()
            try:
                yield self.db
                if self._events:
                    await self.db.executemany(
                        "INSERT INTO events (flow_id, root, kind, data, at) VALUES (?, ?, ?, ?, ?)", self._events
                    )
            except BaseException:
                self._events = []
                await self.db.execute("ROLLBACK")
                self.notes = set()
                raise
            finally:
                self._events = []
            await self.db.execute("COMMIT")
            notes, self.notes = self.notes, set()
        for callback in self.on_commit:
            callback(notes)

    async def write_statement(self, sql: str, params: tuple[Any, ...], notes: set[tuple[Any, ...]]) -> list[aiosqlite.Row]:
        """One writing statement ending in RETURNING, as its own transaction (one trip to the
        connection's thread). Returns the rows it changed; ``notes`` are published when there are any."""
        async with self._write_lock:
            rows = await self._while_locked(sql, params)
        if rows:
            for callback in self.on_commit:
                callback(notes)
        return rows

    async def _begin_immediate(self) -> None:
        await self._while_locked("BEGIN IMMEDIATE", ())

    async def _while_locked(self, sql: str, params: tuple[Any, ...]) -> list[aiosqlite.Row]:
        """Run a statement that takes the write lock, retrying while the database is locked.

        SQLite skips the busy handler in some WAL races (SQLITE_BUSY_SNAPSHOT and recovery), so
        "database is locked" can come back at once even with a busy timeout."""
        delay = 0.001
        deadline = time.monotonic() + BUSY_SECONDS
        while True:
            try:
                return list(await self.db.execute_fetchall(sql, params))
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise StoreError(f"the Flow DB stayed locked for {BUSY_SECONDS:g} s") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)

    async def data_version(self) -> int:
        return (await self._the("PRAGMA data_version"))[0]

    # Statements always run to completion and close: an open one would pin a stale read snapshot,
    # and a later BEGIN IMMEDIATE on this connection would fail with "database is locked" at once.
    async def _one(self, sql: str, *params: Any) -> aiosqlite.Row | None:
        rows = await self._all(sql, *params)
        return rows[0] if rows else None

    async def _the(self, sql: str, *params: Any) -> aiosqlite.Row:
        """The one row a query must find (inside a transaction that already established it exists)."""
        row = await self._one(sql, *params)
        if row is None:
            raise NotFoundError(f"no row for {sql} {params}")
        return row

    async def _all(self, sql: str, *params: Any) -> list[aiosqlite.Row]:
        # One trip to the connection's thread (execute, fetch and close together): in a VM each
        # cross-thread hand-off costs far more than the query itself.
        return list(await self.db.execute_fetchall(sql, params))

    async def _event(self, db: aiosqlite.Connection, flow_id: str, root: str, kind: str, data: dict[str, Any]) -> None:
        """Record an event of the current transaction (written in one statement at commit)."""
        self._events.append((flow_id, root, kind, _dumps(data), time.time()))

    # -- bundles and deployments ----------------------------------------------------------------

    async def put_bundle(self, digest: str, data: bytes, entry: str) -> bool:
        """Store a bundle; returns False when the grid already held it (uploads are idempotent)."""
        async with self.write() as db:
            cursor = await db.execute(
                "INSERT OR IGNORE INTO bundles (digest, data, entry, size, created) VALUES (?, ?, ?, ?, ?)",
                (digest, data, entry, len(data), time.time()),
            )
            return cursor.rowcount == 1

    async def has_bundle(self, digest: str) -> bool:
        return await self._one("SELECT 1 FROM bundles WHERE digest = ?", digest) is not None

    async def get_bundle(self, digest: str) -> bytes:
        row = await self._one("SELECT data FROM bundles WHERE digest = ?", digest)
        if row is None:
            raise NotFoundError(f"no bundle {digest}")
        return bytes(row["data"])

    async def put_deployment(self, name: str, digest: str, quota: str) -> None:
        now = time.time()
        async with self.write() as db:
            await db.execute(
                "INSERT INTO deployments (name, digest, quota, created, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET digest = excluded.digest, quota = excluded.quota, "
                "updated = excluded.updated",
                (name, digest, quota, now, now),
            )

    async def list_deployments(self, quota_prefix: str = "/") -> list[dict[str, Any]]:
        rows = await self._all("SELECT * FROM deployments ORDER BY name")
        return [dict(r) for r in rows if _under(r["quota"], quota_prefix)]

    async def get_deployment(self, name: str) -> dict[str, Any]:
        row = await self._one("SELECT * FROM deployments WHERE name = ?", name)
        if row is None:
            raise NotFoundError(f"no deployment named '{name}'")
        return dict(row)

    # -- flows ------------------------------------------------------------------------------

    async def start_flow(self, bundle: str, args: dict[str, Any], quota: str, username: str,
                         name: str | None = None) -> dict[str, Any]:
        """Start a root flow at the bundle's entry script: one INSERT, which also proves the bundle exists
        (and whose trigger records the event)."""
        flow_id = new_id()
        now = time.time()
        rows = await self.write_statement(
            "INSERT INTO flows (id, parent, root, name, bundle, entry, args, quota, username, status, "
            "created, updated, runnable) SELECT ?, NULL, ?, COALESCE(?, b.entry), b.digest, "
            "json_object('module', b.entry, 'function', NULL), ?, ?, ?, 'pending', ?, ?, 1 "
            "FROM bundles b WHERE b.digest = ? RETURNING *",
            (flow_id, flow_id, name, _dumps(args), quota, username, now, now, bundle),
            notes={("runnable",)},
        )
        if not rows:
            raise NotFoundError(f"no bundle {bundle}")
        return _flow_json(rows[0])

    async def get_flow(self, flow_id: str) -> dict[str, Any]:
        row = await self._one("SELECT * FROM flows WHERE id = ?", flow_id)
        if row is None:
            raise NotFoundError(f"no flow {flow_id}")
        return _flow_json(row)

    async def list_flows(
        self, status: str | None = None, root: str | None = None, quota: str = "/", limit: int = 500,
        roots_only: bool = False,
    ) -> list[dict[str, Any]]:
        sql = "SELECT * FROM flows WHERE 1 = 1"
        params: list[Any] = []
        if status:
            sql += " AND status = ?"
            params.append(status)
        if root:
            sql += " AND root = ?"
            params.append(root)
        if roots_only:
            sql += " AND parent IS NULL"
        sql += " ORDER BY created DESC LIMIT ?"
        params.append(limit)
        rows = await self._all(sql, *params)
        return [_flow_json(r) for r in rows if _under(r["quota"], quota)]

    async def get_journal(self, flow_id: str) -> list[JournalEntry]:
        rows = await self._all("SELECT * FROM journal WHERE flow_id = ? ORDER BY seq", flow_id)
        return [_entry(r) for r in rows]

    async def events_after(self, after: int, root: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        if root:
            rows = await self._all(
                "SELECT * FROM events WHERE root = ? AND id > ? ORDER BY id LIMIT ?", root, after, limit
            )
        else:
            rows = await self._all("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", after, limit)
        return [
            {**_loads(r["data"]), "id": r["id"], "flow_id": r["flow_id"], "root": r["root"], "type": r["kind"],
             "at": r["at"]}
            for r in rows
        ]

    async def cancel_flow(self, flow_id: str, reason: str = "cancelled") -> list[str]:
        """Cancel a flow and its unfinished descendants; returns the ids cancelled."""
        async with self.write() as db:
            row = await self._one("SELECT * FROM flows WHERE id = ?", flow_id)
            if row is None:
                raise NotFoundError(f"no flow {flow_id}")
            rows = await self._all(
                "WITH RECURSIVE tree(id) AS (SELECT ? UNION ALL SELECT f.id FROM flows f JOIN tree ON f.parent = tree.id) "
                "SELECT flows.* FROM flows JOIN tree USING (id) WHERE flows.status NOT IN ('completed', 'failed', 'cancelled')",
                flow_id,
            )
            for row in rows:
                await self._finish(db, row, "cancelled", error={"message": reason, "traceback": ""})
            return [row["id"] for row in rows]

    async def send_message(self, flow_id: str, inbox: str, value: Any, sender: str) -> int:
        async with self.write() as db:
            row = await self._one("SELECT status FROM flows WHERE id = ?", flow_id)
            if row is None:
                raise NotFoundError(f"no flow {flow_id}")
            message_id = await self._insert_message(db, flow_id, inbox, value, sender)
            await self._deliver(db, flow_id, inbox)
            return message_id

    async def _insert_message(self, db: aiosqlite.Connection, flow_id: str, inbox: str, value: Any, sender: str) -> int:
        self.notes.add(("inbox",))
        cursor = await db.execute(
            "INSERT INTO messages (flow_id, inbox, value, sender, created) VALUES (?, ?, ?, ?, ?)",
            (flow_id, inbox, _dumps(value), sender, time.time()),
        )
        if inbox in LOG_INBOXES:  # a flow's _stdout and _stderr are its log: writing there is logging
            flow = await self._the("SELECT root, name FROM flows WHERE id = ?", flow_id)
            text = value if isinstance(value, str) else _dumps(value)
            await self._event(db, flow_id, flow["root"], "log",
                              {"text": text, "stream": inbox, "name": flow["name"], "sender": sender})
        return int(cursor.lastrowid or 0)

    async def add_injection(self, flow_id: str, action: str, seconds: float = 0.0) -> None:
        async with self.write() as db:
            if await self._one("SELECT 1 FROM flows WHERE id = ?", flow_id) is None:
                raise NotFoundError(f"no flow {flow_id}")
            await db.execute(
                "INSERT INTO injections (flow_id, action, seconds, created) VALUES (?, ?, ?, ?)",
                (flow_id, action, seconds, time.time()),
            )

    # -- worker side ----------------------------------------------------------------------------

    async def claim(self, worker: str, limit: int) -> list[dict[str, Any]]:
        """Lease up to ``limit`` runnable flows to ``worker``; returns their tasks with journals.

        One UPDATE ... RETURNING leases them all and one SELECT reads their journals, however many."""
        if await self._one("SELECT 1 FROM flows WHERE runnable = 1 AND lease_owner IS NULL LIMIT 1") is None:
            return []  # a read first: woken claimers must not queue for the write lock for nothing
        now = time.time()
        async with self.write() as db:
            rows = await self._all(
                "UPDATE flows SET lease_owner = ?, lease_expires = ?, lease_epoch = lease_epoch + 1, runnable = 0, "
                "status = 'running', updated = ? WHERE id IN (SELECT id FROM flows WHERE runnable = 1 "
                "AND lease_owner IS NULL ORDER BY created LIMIT ?) RETURNING *",
                worker, now + LEASE_SECONDS, now, limit,
            )
            if not rows:
                return []
            journals: dict[str, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
            marks = ",".join("?" * len(rows))
            for entry in await self._all(
                f"SELECT * FROM journal WHERE flow_id IN ({marks}) ORDER BY flow_id, seq", *journals
            ):
                journals[entry["flow_id"]].append(_entry(entry).to_json())
            tasks = []
            for row in sorted(rows, key=lambda r: r["created"]):
                entries = journals[row["id"]]
                await self._event(db, row["id"], row["root"], "flow",
                                  {"status": "running", "worker": worker, "replay": len(entries), "name": row["name"]})
                task = _flow_json(row)
                task.update(lease=f"{worker}:{row['lease_epoch']}", epoch=row["lease_epoch"], journal=entries)
                tasks.append(task)
            return tasks

    async def _check_lease(self, flow_id: str, worker: str, epoch: int) -> aiosqlite.Row:
        row = await self._one("SELECT * FROM flows WHERE id = ?", flow_id)
        return self._check_held(row, flow_id, worker, epoch)

    @staticmethod
    def _check_held(row: aiosqlite.Row | None, flow_id: str, worker: str, epoch: int) -> aiosqlite.Row:
        """Writes are conditional on the lease: only its current holder, at its current epoch."""
        if row is None:
            raise NotFoundError(f"no flow {flow_id}")
        if row["status"] == "cancelled":
            raise LeaseLostError("cancelled")
        if row["lease_owner"] != worker or row["lease_epoch"] != epoch:
            raise LeaseLostError(f"flow {flow_id} is not leased to {worker} (epoch {epoch})")
        return row

    async def append(self, flow_id: str, worker: str, epoch: int, entry: JournalEntry) -> Appended:
        """Commit a request (and its result when it has one), with any result answered in the same transaction."""
        now = time.time()
        if entry.result is not None:
            # Fast path for actions answered by the worker (now, random, uuid, print): one conditional
            # INSERT, its own transaction, checks the lease, the sequence number and that no failure
            # injection is pending; the journal triggers write its events in the same statement.
            inserted = await self.write_statement(
                "INSERT INTO journal (flow_id, seq, kind, args, hash, callsite, result, requested_at, "
                "answered_at, worker) SELECT f.id, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM flows f WHERE f.id = ? "
                "AND f.lease_owner = ? AND f.lease_epoch = ? AND f.status != 'cancelled' "
                "AND COALESCE((SELECT MAX(seq) FROM journal WHERE flow_id = f.id), 0) + 1 = ? "
                "AND NOT EXISTS (SELECT 1 FROM injections WHERE flow_id = f.id AND used_seq IS NULL) RETURNING seq",
                (entry.seq, entry.kind, _dumps(entry.args), entry.hash, entry.callsite, _dumps(entry.result),
                 entry.requested_at or now, now, worker, flow_id, worker, epoch, entry.seq),
                notes={("result", flow_id, entry.seq)},
            )
            if inserted:
                return Appended(entry.result, 0.0)
            # Otherwise the full path below says why it is refused, or applies the injection.
        async with self.write() as db:
            # One statement for the lease, the expected sequence number and a pending failure injection.
            flow = self._check_held(await self._one(
                "SELECT f.*, (SELECT MAX(seq) FROM journal WHERE flow_id = f.id) AS last_seq, "
                "i.id AS injection_id, i.action AS injection, i.seconds AS injection_seconds "
                "FROM flows f LEFT JOIN injections i ON i.id = (SELECT id FROM injections "
                "WHERE flow_id = f.id AND used_seq IS NULL ORDER BY id LIMIT 1) WHERE f.id = ?",
                flow_id,
            ), flow_id, worker, epoch)
            expected = (flow["last_seq"] or 0) + 1
            if entry.seq != expected:
                raise LeaseLostError(f"journal of {flow_id} is at {expected - 1}; refusing entry {entry.seq}")
            result = entry.result
            deadline = None
            delay = 0.0
            if flow["injection_id"] is not None and entry.kind != "print":
                await db.execute("UPDATE injections SET used_seq = ? WHERE id = ?", (entry.seq, flow["injection_id"]))
                if flow["injection"] == "delay":
                    delay = float(flow["injection_seconds"])
                else:
                    result = jr.err(f"injected failure (flowmetal failure injection on {entry.kind})")
            if result is None and entry.kind == "sleep":
                deadline = now + max(float(entry.args.get("seconds") or 0), 0.0)
            elif result is None and entry.kind in ("receive", "wait") and entry.args.get("timeout") is not None:
                deadline = now + max(float(entry.args["timeout"]), 0.0)
            await db.execute(
                "INSERT INTO journal (flow_id, seq, kind, args, hash, callsite, result, requested_at, answered_at, "
                "worker, deadline) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (flow_id, entry.seq, entry.kind, _dumps(entry.args), entry.hash, entry.callsite,
                 None if result is None else _dumps(result), entry.requested_at or now,
                 None if result is None else now, worker, deadline),
            )
            if result is not None:
                self.notes.add(("result", flow_id, entry.seq))
                return Appended(result, delay)
            if entry.kind == "run":
                result = await self._start_child(db, flow, entry.args)
            elif entry.kind == "send":
                result = await self._send_from_flow(db, flow, entry.args)
            elif entry.kind == "wait":
                result = await self._wait_result(db, entry.args, timed_out=False)
            elif entry.kind == "receive":
                result = await self._receive_result(db, flow_id, entry.seq, entry.args["inbox"])
            elif entry.kind == "sleep" and deadline is not None and deadline <= now:
                result = jr.ok(None)
            if result is not None:
                await self._set_result(db, flow, entry.seq, entry.kind, entry.args, result)
            elif entry.kind in jr.CONNECTOR_KINDS:
                self.notes.add(("requests", entry.kind))
            if deadline is not None and result is None:
                self.notes.add(("deadlines",))
            return Appended(result, delay)

    async def _set_result(self, db: aiosqlite.Connection, flow: aiosqlite.Row, seq: int, kind: str, args: Any,
                          result: dict[str, Any]) -> bool:
        """Record a result once; wakes a suspended flow. Returns False when it was already answered."""
        cursor = await db.execute(
            "UPDATE journal SET result = ?, answered_at = ?, executor_expires = NULL "
            "WHERE flow_id = ? AND seq = ? AND result IS NULL",
            (_dumps(result), time.time(), flow["id"], seq),
        )
        if cursor.rowcount != 1:
            return False
        self.notes.add(("result", flow["id"], seq))
        self.notes.add(("runnable",))
        await db.execute(
            "UPDATE flows SET status = 'pending', runnable = 1, resumes = resumes + 1, updated = ? "
            "WHERE id = ? AND status = 'waiting'",
            (time.time(), flow["id"]),
        )
        return True

    async def record_result(self, flow_id: str, seq: int, result: dict[str, Any], executor: str | None = None) -> bool:
        """A connector's answer. Refused (False) when already answered or no longer held by ``executor``."""
        async with self.write() as db:
            row = await self._one("SELECT * FROM journal WHERE flow_id = ? AND seq = ?", flow_id, seq)
            if row is None or row["result"] is not None:
                return False
            if executor is not None and row["executor"] != executor:
                return False
            flow = await self._the("SELECT * FROM flows WHERE id = ?", flow_id)
            return await self._set_result(db, flow, seq, row["kind"], _loads(row["args"]), result)

    async def _start_child(self, db: aiosqlite.Connection, parent: aiosqlite.Row, args: dict[str, Any]) -> dict[str, Any]:
        spec = args["flow"]
        child_id = new_id()
        now = time.time()
        entry = {"module": spec["module"], "function": spec["function"], "resources": args.get("resources") or {}}
        await db.execute(
            "INSERT INTO flows (id, parent, root, name, bundle, entry, args, quota, username, status, created, "
            "updated, runnable) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, 1)",
            (child_id, parent["id"], parent["root"], spec["name"], parent["bundle"], _dumps(entry),
             _dumps(args.get("args") or {}), parent["quota"], parent["username"], now, now),
        )
        self.notes.add(("runnable",))
        return jr.ok({"flow_id": child_id, "flow": spec["name"]})

    async def _send_from_flow(self, db: aiosqlite.Connection, flow: aiosqlite.Row, args: dict[str, Any]) -> dict[str, Any]:
        target = await self._one("SELECT id FROM flows WHERE id = ?", args["flow_id"])
        if target is None:
            return jr.err(f"send: no flow {args['flow_id']}")
        await self._insert_message(db, args["flow_id"], args.get("inbox", "_stdin"), args.get("value"), flow["id"])
        await self._deliver(db, args["flow_id"], args.get("inbox", "_stdin"))
        return jr.ok(None)

    async def _wait_result(self, db: aiosqlite.Connection, args: dict[str, Any], timed_out: bool) -> dict[str, Any] | None:
        """The results of a wait on child flows, in the order given; None while one is still running."""
        tasks = args.get("tasks") or []
        ids = [t.get("flow_id") for t in tasks if isinstance(t, dict) and isinstance(t.get("flow_id"), str)]
        marks = ",".join("?" * len(ids))
        if ids and not timed_out:
            # Cheap test first: a parent waiting on many children is re-checked as each one ends.
            running = await self._the(
                f"SELECT COUNT(*) AS n FROM flows WHERE id IN ({marks}) AND status NOT IN ('completed', 'failed', 'cancelled')",
                *ids,
            )
            if running["n"]:
                return None
        children = {row["id"]: row for row in await self._all(f"SELECT * FROM flows WHERE id IN ({marks})", *ids)} if ids else {}
        results = []
        for task in tasks:
            child_id = task.get("flow_id") if isinstance(task, dict) else None
            child = children.get(child_id) if isinstance(child_id, str) else None
            if child is None:
                results.append(jr.err(f"wait: {task!r} is not a task"))
            elif child["status"] == "completed":
                results.append(jr.ok(_loads(child["result"])))
            elif child["status"] in ("failed", "cancelled"):
                error = _loads(child["error"]) or {}
                verb = "failed" if child["status"] == "failed" else "was cancelled"
                results.append(jr.err(f"flow {child['name']} ({child_id}) {verb}: {error.get('message', '')}",
                                      error.get("traceback", "")))
            elif timed_out:
                results.append(jr.err(f"timeout waiting for flow {child['name']} ({child_id})"))
            else:
                return None
        return jr.ok(results)

    async def _receive_result(self, db: aiosqlite.Connection, flow_id: str, seq: int, inbox: str) -> dict[str, Any] | None:
        message = await self._one(
            "SELECT * FROM messages WHERE flow_id = ? AND inbox = ? AND consumed_seq IS NULL ORDER BY id LIMIT 1",
            flow_id, inbox,
        )
        if message is None:
            return None
        await db.execute("UPDATE messages SET consumed_seq = ? WHERE id = ?", (seq, message["id"]))
        return jr.ok(_loads(message["value"]))

    async def _deliver(self, db: aiosqlite.Connection, flow_id: str, inbox: str) -> None:
        """Hand waiting messages to the flow's open receive on that inbox (in order, once)."""
        flow = await self._the("SELECT * FROM flows WHERE id = ?", flow_id)
        for row in await self._all(
            "SELECT seq, args FROM journal WHERE flow_id = ? AND kind = 'receive' AND result IS NULL ORDER BY seq",
            flow_id,
        ):
            args = _loads(row["args"])
            if args.get("inbox", "_stdin") != inbox:
                continue
            result = await self._receive_result(db, flow_id, row["seq"], inbox)
            if result is None:
                return
            await self._set_result(db, flow, row["seq"], "receive", args, result)

    async def deliver_pending(self) -> int:
        """Match every open receive with waiting messages (the inbox connector's sweep)."""
        pairs = await self._all(
            "SELECT DISTINCT j.flow_id, m.inbox FROM journal j JOIN messages m ON m.flow_id = j.flow_id "
            "WHERE j.kind = 'receive' AND j.result IS NULL AND m.consumed_seq IS NULL"
        )
        if not pairs:
            return 0
        async with self.write() as db:
            for row in pairs:
                await self._deliver(db, row["flow_id"], row["inbox"])
        return len(pairs)

    async def result_of(self, flow_id: str, seq: int) -> tuple[dict[str, Any] | None, str]:
        """An entry's result (or None) and the flow's status, as committed.

        Read under the write lock: this connection is shared, and a result another coroutine has
        written but not yet committed must never reach a worker."""
        async with self._write_lock:
            row = await self._one(
                "SELECT j.result, f.status FROM journal j JOIN flows f ON f.id = j.flow_id "
                "WHERE j.flow_id = ? AND j.seq = ?",
                flow_id, seq,
            )
        if row is None:
            raise NotFoundError(f"no journal entry {flow_id}/{seq}")
        return _loads(row["result"]), row["status"]

    async def finish(self, flow_id: str, worker: str, epoch: int, status: str, result: Any = None,
                     error: dict[str, Any] | None = None) -> None:
        now = time.time()
        # A root flow held by this worker ends in one statement; children (a parent may wait on them)
        # and refusals (to say why) take the full path.
        ended = await self.write_statement(
            "UPDATE flows SET status = ?, result = ?, error = ?, finished = ?, updated = ?, lease_owner = NULL, "
            "lease_expires = NULL, runnable = 0 WHERE id = ? AND parent IS NULL AND lease_owner = ? "
            "AND lease_epoch = ? AND status NOT IN ('completed', 'failed', 'cancelled') RETURNING id",
            (status, _dumps(result), None if error is None else _dumps(error), now, now, flow_id, worker, epoch),
            notes={("finished", flow_id)},
        )
        if ended:
            return
        async with self.write() as db:
            flow = await self._check_lease(flow_id, worker, epoch)
            await self._finish(db, flow, status, result, error)

    async def _finish(self, db: aiosqlite.Connection, flow: aiosqlite.Row, status: str, result: Any = None,
                      error: dict[str, Any] | None = None) -> None:
        """End a flow (``flow`` is its row as read in this transaction) and answer a parent waiting on it."""
        now = time.time()
        flow_id = flow["id"]
        await db.execute(
            "UPDATE flows SET status = ?, result = ?, error = ?, finished = ?, updated = ?, lease_owner = NULL, "
            "lease_expires = NULL, runnable = 0 WHERE id = ?",
            (status, _dumps(result), None if error is None else _dumps(error), now, now, flow_id),
        )
        self.notes.add(("finished", flow_id))  # (the flow_finished trigger records the event)
        if flow["parent"] is None:
            return
        parent = await self._the("SELECT * FROM flows WHERE id = ?", flow["parent"])
        for row in await self._all(
            "SELECT seq, args FROM journal WHERE flow_id = ? AND kind = 'wait' AND result IS NULL", parent["id"]
        ):
            args = _loads(row["args"])
            if any(isinstance(t, dict) and t.get("flow_id") == flow_id for t in args.get("tasks") or []):
                resolved = await self._wait_result(db, args, timed_out=False)
                if resolved is not None:
                    await self._set_result(db, parent, row["seq"], "wait", args, resolved)

    async def suspend(self, flow_id: str, worker: str, epoch: int) -> None:
        """Release a flow that waits on a slow action; it becomes runnable again when a result lands."""
        async with self.write() as db:
            flow = await self._check_lease(flow_id, worker, epoch)
            open_rows = await self._all("SELECT seq FROM journal WHERE flow_id = ? AND result IS NULL", flow_id)
            runnable = 0 if open_rows else 1
            await db.execute(
                "UPDATE flows SET status = ?, lease_owner = NULL, lease_expires = NULL, runnable = ?, updated = ? "
                "WHERE id = ?",
                ("waiting" if open_rows else "pending", runnable, time.time(), flow_id),
            )
            await self._event(db, flow_id, flow["root"], "flow", {"status": "waiting", "name": flow["name"]})
            if runnable:
                self.notes.add(("runnable",))

    async def heartbeat(self, worker: str, flow_ids: list[str]) -> list[str]:
        """Extend the worker's leases; returns the held flows it must stop (cancelled or lost)."""
        now = time.time()
        async with self.write() as db:
            await db.execute(
                "UPDATE flows SET lease_expires = ? WHERE lease_owner = ?", (now + LEASE_SECONDS, worker)
            )
        if not flow_ids:
            return []
        marks = ",".join("?" * len(flow_ids))
        held = {r["id"] for r in await self._all(
            f"SELECT id FROM flows WHERE id IN ({marks}) AND lease_owner = ?", *flow_ids, worker
        )}
        return [fid for fid in flow_ids if fid not in held]

    async def release_worker(self, worker: str, reason: str) -> int:
        """A worker is gone: its flows become runnable at once (another worker replays them)."""
        async with self.write() as db:
            rows = await self._all("SELECT id, root, name FROM flows WHERE lease_owner = ?", worker)
            for row in rows:
                await db.execute(
                    "UPDATE flows SET lease_owner = NULL, lease_expires = NULL, runnable = 1, status = 'pending', "
                    "updated = ? WHERE id = ?",
                    (time.time(), row["id"]),
                )
                await self._event(db, row["id"], row["root"], "flow",
                                  {"status": "pending", "name": row["name"], "lease_lost": worker, "reason": reason})
                self.notes.add(("runnable",))
            return len(rows)

    async def release_executor(self, executor: str) -> int:
        """A connector is gone: every request it held without a result is declared failed (interrupted)."""
        rows = await self._all(
            "SELECT flow_id, seq FROM journal WHERE executor = ? AND result IS NULL", executor
        )
        for row in rows:
            await self.record_result(row["flow_id"], row["seq"], jr.err(jr.INTERRUPTED))
        return len(rows)

    async def release_previous_grid(self) -> tuple[int, int]:
        """A grid is starting, and nothing of the previous one survived it: every flow it leased is
        runnable again and every request it had in flight is declared interrupted, now rather than
        when their leases expire. Returns (flows released, requests interrupted)."""
        flows = 0
        for row in await self._all("SELECT DISTINCT lease_owner FROM flows WHERE lease_owner IS NOT NULL"):
            flows += await self.release_worker(row["lease_owner"], "the grid restarted")
        requests = 0
        for row in await self._all("SELECT DISTINCT executor FROM journal WHERE executor IS NOT NULL AND result IS NULL"):
            requests += await self.release_executor(row["executor"])
        return flows, requests

    async def reap(self) -> None:
        """Expire leases: flows of silent workers become runnable, requests of silent connectors fail."""
        now = time.time()
        for row in await self._all(
            "SELECT DISTINCT lease_owner FROM flows WHERE lease_owner IS NOT NULL AND lease_expires < ?", now
        ):
            await self.release_worker(row["lease_owner"], "lease expired")
        for row in await self._all(
            "SELECT flow_id, seq FROM journal WHERE result IS NULL AND executor IS NOT NULL AND executor_expires < ?",
            now,
        ):
            await self.record_result(row["flow_id"], row["seq"], jr.err(jr.INTERRUPTED))

    # -- connectors ---------------------------------------------------------------------------

    async def claim_requests(self, kinds: list[str], executor: str, limit: int) -> list[dict[str, Any]]:
        """Lease open requests of these kinds to a connector, each for its timeout plus a grace period."""
        now = time.time()
        marks = ",".join("?" * len(kinds))
        if await self._one(
            f"SELECT 1 FROM journal WHERE kind IN ({marks}) AND result IS NULL AND executor IS NULL LIMIT 1", *kinds
        ) is None:
            return []
        async with self.write() as db:
            rows = await self._all(
                f"SELECT flow_id, seq, kind, args FROM journal WHERE kind IN ({marks}) AND result IS NULL "
                "AND executor IS NULL ORDER BY requested_at LIMIT ?",
                *kinds, limit,
            )
            claimed = []
            for row in rows:
                args = _loads(row["args"])
                expires = now + float(args.get("timeout") or 30) + EXECUTOR_GRACE
                await db.execute(
                    "UPDATE journal SET executor = ?, executor_expires = ? WHERE flow_id = ? AND seq = ?",
                    (executor, expires, row["flow_id"], row["seq"]),
                )
                claimed.append({"flow_id": row["flow_id"], "seq": row["seq"], "kind": row["kind"], "args": args})
            return claimed

    async def finished_among(self, flow_ids: list[str]) -> list[str]:
        """Which of these flows have ended (their resources can be closed)."""
        if not flow_ids:
            return []
        marks = ",".join("?" * len(flow_ids))
        rows = await self._all(
            f"SELECT id FROM flows WHERE id IN ({marks}) AND status IN ('completed', 'failed', 'cancelled')",
            *flow_ids,
        )
        known = {r["id"] for r in await self._all(f"SELECT id FROM flows WHERE id IN ({marks})", *flow_ids)}
        # A flow the Flow DB never heard of (a database wiped under the workspaces) has ended too.
        return sorted({r["id"] for r in rows} | (set(flow_ids) - known))

    async def holdings(self) -> dict[str, dict[str, list[Any]]]:
        """What each worker and connector holds now: leased flows, and requests in flight."""
        held: dict[str, dict[str, list[Any]]] = {}
        for row in await self._all("SELECT id, lease_owner FROM flows WHERE lease_owner IS NOT NULL"):
            held.setdefault(row["lease_owner"], {"flows": [], "requests": []})["flows"].append(row["id"])
        for row in await self._all(
            "SELECT flow_id, seq, kind, executor FROM journal WHERE executor IS NOT NULL AND result IS NULL"
        ):
            held.setdefault(row["executor"], {"flows": [], "requests": []})["requests"].append(
                {"flow_id": row["flow_id"], "seq": row["seq"], "kind": row["kind"]}
            )
        return held

    async def open_deadlines(self) -> list[dict[str, Any]]:
        rows = await self._all(
            "SELECT flow_id, seq, kind, deadline FROM journal WHERE result IS NULL AND deadline IS NOT NULL "
            "ORDER BY deadline"
        )
        return [dict(r) for r in rows]

    async def fire_deadline(self, flow_id: str, seq: int) -> bool:
        """A timer reached its deadline: a sleep ends, a receive or wait times out."""
        async with self.write() as db:
            row = await self._one("SELECT * FROM journal WHERE flow_id = ? AND seq = ?", flow_id, seq)
            if row is None or row["result"] is not None or row["deadline"] is None:
                return False
            if row["deadline"] > time.time() + 0.001:
                return False
            args = _loads(row["args"])
            if row["kind"] == "sleep":
                result: dict[str, Any] | None = jr.ok(None)
            elif row["kind"] == "wait":
                result = await self._wait_result(db, args, timed_out=True)
            else:
                result = jr.err(f"timeout: no message on inbox {args.get('inbox', '_stdin')} within {args.get('timeout')} s")
            flow = await self._the("SELECT * FROM flows WHERE id = ?", flow_id)
            return await self._set_result(db, flow, seq, row["kind"], args, result or jr.err("timeout"))


def _statements(script: str) -> list[str]:
    """Split a migration into statements (triggers hold semicolons of their own)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise StoreError(f"incomplete statement in migration: {buffer.strip()[:80]}")
    return statements


def _under(quota: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return not prefix or quota == prefix or quota.startswith(prefix + "/")


def _flow_json(row: aiosqlite.Row) -> dict[str, Any]:
    return {
        "id": row["id"], "parent": row["parent"], "root": row["root"], "flow": row["name"], "bundle": row["bundle"],
        "entry": _loads(row["entry"]), "args": _loads(row["args"]), "quota": row["quota"],
        "username": row["username"], "status": row["status"], "result": _loads(row["result"]),
        "error": _loads(row["error"]), "created": row["created"], "updated": row["updated"],
        "finished": row["finished"], "worker": row["lease_owner"], "resumes": row["resumes"],
    }


def _entry(row: aiosqlite.Row) -> JournalEntry:
    return JournalEntry(
        seq=row["seq"], kind=row["kind"], args=_loads(row["args"]), hash=row["hash"], callsite=row["callsite"],
        result=_loads(row["result"]), requested_at=row["requested_at"], answered_at=row["answered_at"],
        worker=row["worker"],
    )
