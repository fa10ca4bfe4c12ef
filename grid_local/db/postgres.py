"""The Flow DB engine on PostgreSQL (asyncpg): a pool, real transactions, retries, LISTEN/NOTIFY.

The same interface as ``engine.SqliteEngine``, for the same queries (``?`` parameters become ``$n``
here, in one place). What differs, and why:

- Transactions are PostgreSQL's (READ COMMITTED), each on a connection of its own from the pool,
  found through a context variable by the statements that run inside it. Nothing serializes writes
  across the grid: a query that reads rows its transaction goes on to change locks them
  (``dialect.lock()``: ``FOR NO KEY UPDATE``), and claims skip the rows another claimer holds
  (``FOR NO KEY UPDATE SKIP LOCKED``), so several claimers work at once.
- A deadlock or serialization failure rolls its transaction back; ``retried`` (which the store
  facade wraps around every call) runs the whole call again, a few times, after a short pause.
- Invariant 8 holds by construction: a read outside a transaction runs on a pool connection of its
  own, so it sees only what was committed (another coroutine's transaction is on another
  connection); ``one_committed`` needs no lock.
- Commit notes go to this process's ``on_commit`` callbacks and, in the same transaction, out as a
  ``NOTIFY`` on one channel (payload: this process's mark and the notes, JSON), which the other
  processes' ``watch_commits`` receive with ``LISTEN``: wake-ups across processes and machines come
  from the database itself.
- A server that is down, refuses connections or drops them is a ``StoreError`` saying the Flow DB
  is unavailable (the APIs answer 503 ``db_unavailable``; api/problems.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from grid_local.db.engine import BUSY_SECONDS, Dialect, Note, Row, RowReads, dumps
from grid_local.db.schema_postgres import MIGRATIONS
from grid_local.errors import StoreError

CHANNEL = "flowmetal_commits"
"""The one NOTIFY channel of a Flow DB: every commit's notes."""
MAX_PAYLOAD = 7900
"""NOTIFY payloads stop at 8000 bytes; a commit that touched more topics wakes everything instead."""
RETRIES = 8
"""How many times a call that hit a deadlock or a serialization failure is run again."""
MIGRATION_LOCK = 0x466C6F77  # pg_advisory_xact_lock key: one process migrates at a time
EVENT_ORDER_LOCK = 0x466C6F78
"""pg_advisory_xact_lock key held by a transaction from its first write (or row-locking read) to its
commit. Events are read in id order (``events_after(cursor)``: ``logs``, ``run``, the TUI), and an id
is taken when the row is inserted: two transactions writing at once could commit their events out
of id order, and a reader whose cursor passed the later one would never see the earlier. Taking
turns from the first write keeps ids in commit order. Reads, and a claim's choice of rows (SKIP
LOCKED), still run side by side."""
POOL_SIZE = 10
"""Connections per process (each transaction in flight holds one)."""

T = TypeVar("T")

RETRIED_ERRORS = (asyncpg.exceptions.SerializationError, asyncpg.exceptions.DeadlockDetectedError)
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    asyncio.TimeoutError,  # no connection free or none could be made in time
    asyncpg.exceptions.ConnectionDoesNotExistError,  # dropped mid-statement
    asyncpg.exceptions.PostgresConnectionError,  # class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutting down, starting up, cancelled
    asyncpg.exceptions.InternalClientError,
)


def is_postgres_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def redacted(url: str) -> str:
    """The URL without its password (for messages and grid.json)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?")
_translated: dict[str, str] = {}


def numbered(sql: str) -> str:
    """``?`` parameters as ``$1, $2, ...`` (outside quoted strings and names); cached per statement."""
    found = _translated.get(sql)
    if found is None:
        counter = iter(range(1, 1_000_000))
        found = _PLACEHOLDER.sub(lambda m: f"${next(counter)}" if m.group() == "?" else m.group(), sql)
        if len(_translated) < 4096:
            _translated[sql] = found
    return found


class PgDialect(Dialect):
    name = "postgres"
    skip_locked = " FOR NO KEY UPDATE SKIP LOCKED"

    def lock(self, of: str = "") -> str:
        # NO KEY: a row lock that does not block the foreign-key checks of inserts that reference it.
        return " FOR NO KEY UPDATE" + (f" OF {of}" if of else "")

    def claim_queue(self) -> str:
        # Per quota node, its oldest runnable flows that no other claimer holds now, locked until the
        # claim commits: two claimers take different flows instead of queueing for the same ones.
        return ("SELECT f.id, f.quota, f.created FROM (SELECT DISTINCT quota FROM flows "
                "WHERE runnable = 1 AND lease_owner IS NULL) AS q CROSS JOIN LATERAL (SELECT id, quota, created "
                "FROM flows WHERE quota = q.quota AND runnable = 1 AND lease_owner IS NULL ORDER BY created "
                f"LIMIT ?{self.skip_locked}) AS f")

    def json_object(self, *pairs: str) -> str:
        return f"json_build_object({', '.join(pairs)})::text"

    def json_field_text(self, column: str) -> str:
        return f"({column}::json ->> ?)"


PG_DIALECT = PgDialect()


@dataclass
class _Transaction:
    connection: Any  # asyncpg.Connection (a pool's proxy)
    notes: set[Note] = field(default_factory=set)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    in_turn: bool = False  # holds EVENT_ORDER_LOCK


_WRITES = ("INSERT", "UPDATE", "DELETE")


def _takes_turn(sql: str) -> bool:
    """Whether a statement may write events or waits for row locks (then it runs in turn)."""
    head = sql.lstrip()[:6].upper()
    return head in _WRITES or (" FOR NO KEY UPDATE" in sql and "SKIP LOCKED" not in sql)


class PostgresEngine(RowReads):
    """One process's pool of connections to a Flow DB on a PostgreSQL server."""

    dialect: Dialect = PG_DIALECT

    def __init__(self, pool: Any, url: str, busy_seconds: float = BUSY_SECONDS) -> None:
        self.pool = pool
        self.url = url
        self.target = redacted(url)
        self.busy_seconds = busy_seconds
        self.on_commit: list[Callable[[set[Note]], None]] = []
        self.mark = uuid.uuid4().hex[:12]  # this process's commits, as its own NOTIFY payloads carry it
        self._current: contextvars.ContextVar[_Transaction | None] = contextvars.ContextVar(
            f"flow_db_transaction_{id(self)}", default=None)
        self._stray_notes: set[Note] = set()  # noted outside any transaction: published with the next commit

    @classmethod
    async def open(cls, url: str, busy_seconds: float = BUSY_SECONDS, pool_size: int = POOL_SIZE) -> "PostgresEngine":
        target = redacted(url)
        try:
            # No floor of open connections (min_size=0): asyncpg would keep reconnecting one in the
            # background while the server is down, logging a traceback each time; connections are
            # made on demand instead, and a call meanwhile is a StoreError (503).
            pool = await asyncpg.create_pool(url, min_size=0, max_size=pool_size, timeout=min(busy_seconds, 10.0),
                                             command_timeout=max(busy_seconds, 30.0))
        except UNAVAILABLE_ERRORS as exc:
            raise StoreError(f"the Flow DB {target} is unavailable: {_reason(exc)}") from None
        engine = cls(pool, url, busy_seconds)
        try:
            await engine._migrate()  # (the first connection is made here)
        except (asyncpg.exceptions.InvalidAuthorizationSpecificationError, asyncpg.exceptions.InvalidCatalogNameError,
                asyncpg.exceptions.InvalidPasswordError) as exc:  # a wrong password, a missing database or role
            await engine.close()
            raise StoreError(f"the Flow DB {target} refused the connection: {exc}") from None
        except BaseException:
            await engine.close()
            raise
        return engine

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pool.close(), 5.0)

    async def schema_version(self) -> int:
        row = await self.one("SELECT version FROM schema_version")
        return 0 if row is None else int(row["version"])

    async def _migrate(self) -> None:
        with self._availability():
            async with self.pool.acquire() as connection, connection.transaction():
                await connection.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
                await connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                version = await connection.fetchval("SELECT version FROM schema_version")
                if version is None:
                    await connection.execute("INSERT INTO schema_version (version) VALUES (0)")
                    version = 0
                if version > len(MIGRATIONS):
                    raise StoreError(f"the Flow DB {self.target} is at schema version {version}, newer than this "
                                     f"Flowmetal knows ({len(MIGRATIONS)}): upgrade Flowmetal")
                for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                    await connection.execute(script)  # (the simple protocol: many statements at once)
                    await connection.execute("UPDATE schema_version SET version = $1", number)

    # -- writing --------------------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """One transaction on a connection of its own; its notes reach ``on_commit`` (and the other
        processes, by NOTIFY) once it committed."""
        if self._current.get() is not None:
            raise RuntimeError("transactions do not nest")
        with self._availability():
            async with self.pool.acquire(timeout=self.busy_seconds) as connection:
                state = _Transaction(connection)
                token = self._current.set(state)
                try:
                    async with connection.transaction():
                        yield
                        if state.events:
                            await self._in_turn(state)
                            await connection.executemany(
                                "INSERT INTO events (flow_id, root, kind, data, at) VALUES ($1, $2, $3, $4, $5)",
                                state.events)
                        notes = state.notes | self._take_stray()
                        if notes:
                            await self._notify(connection, notes)
                finally:
                    self._current.reset(token)
        self._published(notes)

    async def write_statement(self, sql: str, params: tuple[Any, ...], notes: set[Note]) -> list[Row]:
        """One writing statement ending in RETURNING, as its own transaction (with its NOTIFY when it
        changed rows and has notes). Retried here on a deadlock or serialization failure."""
        text = numbered(sql)
        for attempt in range(RETRIES + 1):
            try:
                with self._availability():
                    async with self.pool.acquire(timeout=self.busy_seconds) as connection:
                        if not notes:
                            return list(await connection.fetch(text, *params))
                        async with connection.transaction():
                            await connection.execute(f"SELECT pg_advisory_xact_lock({EVENT_ORDER_LOCK})")
                            rows = list(await connection.fetch(text, *params))
                            if rows:
                                await self._notify(connection, notes)
                break
            except RETRIED_ERRORS:
                if attempt == RETRIES:
                    raise
                await _pause(attempt)
        if rows:
            self._published(notes)
        return rows

    async def execute(self, sql: str, *params: Any) -> int:
        """A write inside ``transaction()``; returns the number of rows it changed."""
        state = self._state()
        with self._availability():
            await self._in_turn(state)
            status = await state.connection.execute(numbered(sql), *params)
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    def note(self, *topic: Any) -> None:
        state = self._current.get()
        (state.notes if state is not None else self._stray_notes).add(topic)

    def event(self, flow_id: str, root: str, kind: str, data: dict[str, Any]) -> None:
        self._state().events.append((flow_id, root, kind, dumps(data), time.time()))

    async def _in_turn(self, state: _Transaction) -> None:
        if not state.in_turn:
            await state.connection.execute(f"SELECT pg_advisory_xact_lock({EVENT_ORDER_LOCK})")
            state.in_turn = True

    def _state(self) -> _Transaction:
        state = self._current.get()
        if state is None:
            raise RuntimeError("a write outside transaction()")
        return state

    def _take_stray(self) -> set[Note]:
        notes, self._stray_notes = self._stray_notes, set()
        return notes

    async def _notify(self, connection: Any, notes: set[Note]) -> None:
        listed: list[list[Any]] | None = sorted(list(note) for note in notes)
        payload = json.dumps({"p": self.mark, "n": listed}, separators=(",", ":"))
        if len(payload.encode()) > MAX_PAYLOAD:
            payload = json.dumps({"p": self.mark, "n": None})
        await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)

    def _published(self, notes: set[Note]) -> None:
        for callback in self.on_commit:
            callback(notes)

    def retried(self, call: Callable[..., Any]) -> Callable[..., Any]:
        """``call`` run again (the whole of it: its transaction was rolled back) when PostgreSQL
        aborted one of its transactions for a deadlock or a serialization failure."""
        async def retrying(*args: Any, **kwargs: Any) -> Any:
            for attempt in range(RETRIES + 1):
                try:
                    return await call(*args, **kwargs)
                except RETRIED_ERRORS:
                    if attempt == RETRIES or self._current.get() is not None:
                        raise
                    await _pause(attempt)
        retrying.__name__ = getattr(call, "__name__", "retrying")
        retrying.__doc__ = call.__doc__
        return retrying

    # -- reading --------------------------------------------------------------------------------

    async def all(self, sql: str, *params: Any) -> list[Row]:
        """Inside a transaction, on its connection; otherwise on any pooled one (committed data only)."""
        state = self._current.get()
        with self._availability():
            if state is not None:
                if _takes_turn(sql):
                    await self._in_turn(state)
                return list(await state.connection.fetch(numbered(sql), *params))
            async with self.pool.acquire(timeout=self.busy_seconds) as connection:
                return list(await connection.fetch(numbered(sql), *params))

    async def one_committed(self, sql: str, *params: Any) -> Row | None:
        """A read whose answer leaves the process: outside a transaction every read here is of
        committed data (a connection of its own), so no lock is needed."""
        return await self.one(sql, *params)

    # -- other processes' commits -------------------------------------------------------------

    async def watch_commits(self, woken: Callable[[set[Note] | None], None], interval: float = 5.0) -> None:
        """``LISTEN`` for the other processes' commits and call ``woken`` with their notes (None: wake
        everything). On a lost connection, reconnect and wake everything (commits may have been missed)."""
        def received(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
            try:
                message = json.loads(payload)
            except ValueError:
                woken(None)
                return
            if message.get("p") == self.mark:
                return  # this process's own commit: on_commit has published it already
            notes = message.get("n")
            woken(None if notes is None else {tuple(note) for note in notes})

        while True:
            try:
                connection = await asyncpg.connect(self.url, timeout=10.0)
            except Exception:
                await asyncio.sleep(1.0)
                continue
            try:
                await connection.add_listener(CHANNEL, received)
                woken(None)
                while not connection.is_closed():
                    await asyncio.sleep(interval)
                    await asyncio.wait_for(connection.execute("SELECT 1"), 10.0)  # a dead server shows here
            except (asyncio.CancelledError, GeneratorExit):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), 2.0)
                raise
            except Exception:
                pass
            connection.terminate()
            await asyncio.sleep(0.5)

    # -- availability ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _availability(self) -> Iterator[None]:
        try:
            yield
        except UNAVAILABLE_ERRORS as exc:
            raise StoreError(f"the Flow DB {self.target} is unavailable: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _pause(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0.001, 0.005) * (2 ** min(attempt, 5)))
