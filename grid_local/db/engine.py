"""The Flow DB engine on SQLite: one connection, transactions, busy retries, migrations, commit notes.

The queries (``bundles``, ``flows``, ``journal``, ``leases``) reach the database only through an
``Engine`` (this one, or ``postgres.PostgresEngine``), so that they never see a driver's cursor:
``execute`` answers the number of rows changed and ids come back through ``RETURNING``. They are
written once, in SQL both engines accept, with ``?`` parameters; the few clauses that differ are
the engine's ``dialect``.

Every write is one ``BEGIN IMMEDIATE`` transaction (or one self-committing statement) behind this
process's write lock: one writer connection per process, WAL, a busy timeout for the other
processes (CONTRIBUTING.md, invariant 8). What a transaction changed is collected as *notes*
(topics such as ``("runnable",)`` or ``("result", flow_id, seq)``) and handed to the ``on_commit``
callbacks once it committed; events the triggers do not write are buffered and written in one
statement at commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from grid_local.db.schema import MIGRATIONS
from grid_local.errors import NotFoundError, StoreError

BUSY_SECONDS = 30.0

Note = tuple[Any, ...]
T = TypeVar("T")


class Row(Protocol):
    """A result row as the queries use it: by column name or position (sqlite3.Row, asyncpg.Record)."""

    def __getitem__(self, key: Any) -> Any: ...

    def keys(self) -> Any: ...


class Dialect:
    """The few clauses the engines spell differently (SQLite's; ``postgres.PG_DIALECT`` is the other).

    Everything else in the queries is SQL both accept."""

    name = "sqlite"
    skip_locked = ""
    """Appended to a claim's SELECT: rows another claimer holds are skipped, not waited for."""

    def lock(self, of: str = "") -> str:
        """Appended to a SELECT whose rows the transaction goes on to change (``of``: the table alias
        to lock in a join): a row lock on PostgreSQL, where a transaction sees other commits between
        its statements; nothing on SQLite, whose write transactions are serialized (BEGIN IMMEDIATE)."""
        return ""

    def claim_queue(self) -> str:
        """The oldest runnable flows of each quota node, at most ``?`` per node, free to claim."""
        return ("SELECT id, quota, created FROM (SELECT id, quota, created, ROW_NUMBER() OVER "
                "(PARTITION BY quota ORDER BY created) AS pos FROM flows WHERE runnable = 1 AND lease_owner IS NULL) "
                "AS queue WHERE pos <= ?")

    def json_object(self, *pairs: str) -> str:
        """A JSON object built from SQL expressions (key, value, key, value...), as TEXT."""
        return f"json_object({', '.join(pairs)})"

    def json_field_text(self, column: str) -> str:
        """A top-level field of a JSON text column as TEXT; takes one ``?``: the field's name."""
        return f"CAST(json_extract({column}, '$.' || ?) AS TEXT)"


SQLITE_DIALECT = Dialect()


class Engine(Protocol):
    """What the queries need of an engine (SqliteEngine, postgres.PostgresEngine)."""

    dialect: Dialect
    target: str
    on_commit: list[Callable[[set[Note]], None]]

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]: ...

    async def write_statement(self, sql: str, params: tuple[Any, ...], notes: set[Note]) -> list[Row]: ...

    async def execute(self, sql: str, *params: Any) -> int: ...

    def note(self, *topic: Any) -> None: ...

    def event(self, flow_id: str, root: str, kind: str, data: dict[str, Any]) -> None: ...

    async def one(self, sql: str, *params: Any) -> Row | None: ...

    async def the(self, sql: str, *params: Any) -> Row: ...

    async def all(self, sql: str, *params: Any) -> list[Row]: ...

    async def one_committed(self, sql: str, *params: Any) -> Row | None: ...

    def retried(self, call: Callable[..., Any]) -> Callable[..., Any]: ...

    async def watch_commits(self, woken: Callable[[set[Note] | None], None]) -> None: ...

    async def close(self) -> None: ...


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class RowReads:
    """``one`` and ``the``, derived from an engine's ``all`` (the same on every engine)."""

    async def all(self, sql: str, *params: Any) -> list[Row]:
        raise NotImplementedError

    async def one(self, sql: str, *params: Any) -> Row | None:
        rows = await self.all(sql, *params)
        return rows[0] if rows else None

    async def the(self, sql: str, *params: Any) -> Row:
        """The one row a query must find (inside a transaction that already established it exists)."""
        row = await self.one(sql, *params)
        if row is None:
            raise NotFoundError(f"no row for {sql} {params}")
        return row


class SqliteEngine(RowReads):
    """One process's connection to the Flow DB file, used from the event loop's own thread.

    Statements run where the coroutine runs, not in a helper thread: on a local WAL file a
    statement takes microseconds, and a hand-off to a thread and back (what aiosqlite does for
    each one) cost about 0.25 ms here, several times the query, with the write lock held across
    every hop of a transaction. What could block is waiting for another process's write lock, so
    the connection's busy timeout is 0 and a busy statement is retried after an asyncio sleep
    (``_while_locked``): the loop goes on serving while this process waits for its turn."""

    dialect = SQLITE_DIALECT

    def __init__(self, db: sqlite3.Connection, path: Path, busy_seconds: float = BUSY_SECONDS) -> None:
        self.db = db
        self.path = path
        self.target = str(path)
        self.busy_seconds = busy_seconds
        """How long a write waits for the Flow DB's lock before it gives up (StoreError)."""
        self._write_lock = asyncio.Lock()
        self.on_commit: list[Callable[[set[Note]], None]] = []  # run after each commit of this process
        self.notes: set[Note] = set()  # what the current transaction changed, for notifications
        self._events: list[tuple[Any, ...]] = []  # the current transaction's events, written at commit

    @classmethod
    async def open(cls, path: Path, busy_seconds: float = BUSY_SECONDS) -> "SqliteEngine":
        path.parent.mkdir(parents=True, exist_ok=True)
        # Opening (and the WAL switch of a new file) may wait for another process: in a thread, with
        # SQLite's own busy handler, so the loop is not held while it does.
        def connect() -> sqlite3.Connection:
            db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                 timeout=min(busy_seconds, 10.0))
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
                db.execute(f"PRAGMA {pragma}").close()
            return db
        db = await asyncio.to_thread(connect)
        db.row_factory = sqlite3.Row
        engine = cls(db, path, busy_seconds)
        try:
            await asyncio.to_thread(engine._migrate)
        except BaseException:
            db.close()
            raise
        db.execute("PRAGMA busy_timeout=0").close()  # from here on a busy statement is retried (_while_locked)
        return engine

    async def close(self) -> None:
        async with self._write_lock:
            self.db.close()

    def _migrate(self) -> None:
        """Bring the schema up to date, in one transaction (in a thread: it may wait for the lock)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in _statements(script):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number}")
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise

    # -- writing --------------------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """One write transaction; its notes reach ``on_commit`` after it committed."""
        async with self._write_lock:
            await self._while_locked("BEGIN IMMEDIATE", ())
            try:
                yield
                if self._events:
                    self.db.executemany(
                        "INSERT INTO events (flow_id, root, kind, data, at) VALUES (?, ?, ?, ?, ?)", self._events
                    )
                self.db.execute("COMMIT")
            except BaseException:
                self.notes = set()
                # A full disk or an I/O error (even on COMMIT) may already have rolled the transaction
                # back; one left open would refuse every later BEGIN of this connection.
                if self.db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")
                raise
            finally:
                self._events = []
            notes, self.notes = self.notes, set()
        self._published(notes)

    async def write_statement(self, sql: str, params: tuple[Any, ...], notes: set[Note]) -> list[Row]:
        """One writing statement ending in RETURNING, as its own transaction. Returns the rows it
        changed; ``notes`` are published when there are any."""
        async with self._write_lock:
            rows = await self._while_locked(sql, params)
        if rows:
            self._published(notes)
        return rows

    async def execute(self, sql: str, *params: Any) -> int:
        """A write inside ``transaction()``; returns the number of rows it changed."""
        cursor = self.db.execute(sql, params)
        count = cursor.rowcount
        cursor.close()
        return count

    def note(self, *topic: Any) -> None:
        """Say what the current transaction changed (published to ``on_commit`` at commit)."""
        self.notes.add(topic)

    def event(self, flow_id: str, root: str, kind: str, data: dict[str, Any]) -> None:
        """Record an event of the current transaction (written in one statement at commit)."""
        self._events.append((flow_id, root, kind, dumps(data), time.time()))

    def _published(self, notes: set[Note]) -> None:
        for callback in self.on_commit:
            callback(notes)

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        # Run to completion and close: an open statement would pin a stale read snapshot, and a
        # later BEGIN IMMEDIATE on this connection would fail with "database is locked" at once.
        cursor = self.db.execute(sql, params)
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    async def _while_locked(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        """Run a statement that may find the database locked by another process, retrying after a
        short asyncio sleep until ``busy_seconds`` have passed.

        (SQLite also answers "database is locked" at once in some WAL races, SQLITE_BUSY_SNAPSHOT
        and recovery, which a busy handler would not have waited out either.)"""
        delay = 0.0002
        deadline = time.monotonic() + self.busy_seconds
        while True:
            try:
                return self._fetch(sql, params)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if self.db.in_transaction and sql != "BEGIN IMMEDIATE":
                    raise  # inside a transaction: the caller's to roll back, not a statement to retry alone
                if time.monotonic() > deadline:
                    raise StoreError(f"the Flow DB stayed locked for {self.busy_seconds:g} s") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.02)

    # -- reading --------------------------------------------------------------------------------

    async def all(self, sql: str, *params: Any) -> list[Row]:
        if self.db.in_transaction:
            return self._fetch(sql, params)
        return await self._while_locked(sql, params)  # (a read can meet a WAL recovery: retried)

    async def one_committed(self, sql: str, *params: Any) -> Row | None:
        """A read whose answer leaves the process, taken under the write lock: this connection is
        shared, and what another coroutine wrote but did not commit yet must never be seen."""
        async with self._write_lock:
            return await self.one(sql, *params)

    async def data_version(self) -> int:
        """A counter that moves when another connection commits (what the notification watcher polls)."""
        return (await self.the("PRAGMA data_version"))[0]

    async def watch_commits(self, woken: Callable[[set[Note] | None], None], interval: float = 0.05) -> None:
        """Call ``woken(None)`` (which topics is unknown) whenever another process commits: SQLite
        tells only that something changed (``PRAGMA data_version``), so it is polled cheaply."""
        version = await self.data_version()
        while True:
            await asyncio.sleep(interval)
            current = await self.data_version()
            if current != version:
                version = current
                woken(None)

    def retried(self, call: Callable[..., Any]) -> Callable[..., Any]:
        """``call`` itself: a write transaction here never conflicts with another (BEGIN IMMEDIATE
        waits for the lock instead), so there is nothing to run again."""
        return call


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
