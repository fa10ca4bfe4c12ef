"""What only PostgreSQL does: schema twins, claimers side by side, NOTIFY wake-ups, a server that is gone."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from grid_local.db import schema, schema_postgres
from grid_local.db.postgres import CHANNEL, PostgresEngine
from grid_local.db.store import FlowStore
from grid_local.errors import StoreError
from tests.postgres_cluster import Cluster

pytestmark = pytest.mark.timeout(120)

SQLITE_TO_POSTGRES = {"INTEGER": "bigint", "REAL": "double precision", "TEXT": "text", "BLOB": "bytea"}


def _sqlite_schema(path: Path) -> tuple[dict[str, dict[str, tuple[str, bool]]], set[str]]:
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        columns = {t: {r[1]: (SQLITE_TO_POSTGRES[r[2]], bool(r[3]) or bool(r[5]))
                       for r in db.execute(f"PRAGMA table_info({t})")} for t in tables}
        triggers = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    db.close()
    return columns, triggers


async def test_both_engines_have_the_same_tables_columns_and_triggers(tmp_path: Path, postgres_url: str) -> None:
    assert len(schema_postgres.MIGRATIONS) == len(schema.MIGRATIONS), (
        "a migration of db/schema.py has no twin in db/schema_postgres.py (or the other way round)")
    await (await FlowStore.open(tmp_path / "flow.db")).close()
    sqlite_columns, sqlite_triggers = _sqlite_schema(tmp_path / "flow.db")

    store = await FlowStore.open(postgres_url)
    try:
        rows = await store.engine.all(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name != 'schema_version'")
        triggers = {r["trigger_name"] for r in await store.engine.all(
            "SELECT DISTINCT trigger_name FROM information_schema.triggers WHERE trigger_schema = 'public'")}
        assert isinstance(store.engine, PostgresEngine)
        version = await store.engine.schema_version()
    finally:
        await store.close()
    pg_columns: dict[str, dict[str, tuple[str, bool]]] = {}
    for r in rows:
        # (a SQLite primary key is NOT NULL in effect; PRAGMA table_info says so only for declared ones)
        pg_columns.setdefault(r["table_name"], {})[r["column_name"]] = (r["data_type"], r["is_nullable"] == "NO")
    for table, columns in sqlite_columns.items():
        assert table in pg_columns, f"table {table} has no PostgreSQL twin"
        assert {c: t for c, (t, _) in columns.items()} == {c: t for c, (t, _) in pg_columns[table].items()}, table
    assert set(pg_columns) == set(sqlite_columns)
    assert triggers == sqlite_triggers
    assert version == len(schema.MIGRATIONS)


async def _runnable_flows(store: FlowStore, count: int) -> set[str]:
    await store.put_bundle("b" * 8, b"", "main.flow")
    return {(await store.start_flow("b" * 8, {}, "/", "tester"))["id"] for _ in range(count)}


async def test_two_claimers_at_once_never_get_the_same_flow_and_both_progress(postgres_url: str) -> None:
    first, second = await FlowStore.open(postgres_url), await FlowStore.open(postgres_url)
    try:
        flows = await _runnable_flows(first, 60)
        got: dict[str, list[str]] = {"a": [], "b": []}

        async def claimer(store: FlowStore, name: str) -> None:
            while True:
                tasks = await store.claim(f"w.{name}", 3)
                if not tasks:
                    return
                got[name] += [t["id"] for t in tasks]
                await asyncio.sleep(0)

        await asyncio.gather(claimer(first, "a"), claimer(second, "b"))
        assert not set(got["a"]) & set(got["b"]), "a flow was leased to two claimers"
        assert len(got["a"]) + len(got["b"]) == len(set(got["a"]) | set(got["b"]))
        assert set(got["a"]) | set(got["b"]) == flows
        assert got["a"] and got["b"], f"one claimer did all the work: {len(got['a'])} / {len(got['b'])}"
    finally:
        await first.close()
        await second.close()


async def test_a_claim_skips_the_flows_another_claimer_holds_instead_of_waiting(postgres_url: str) -> None:
    first, second = await FlowStore.open(postgres_url), await FlowStore.open(postgres_url)
    try:
        flows = await _runnable_flows(first, 6)
        async with first.engine.transaction():  # a claimer in the middle of its claim, holding 3 flows
            held = {r["id"] for r in await first.engine.all(
                "SELECT id FROM flows ORDER BY created LIMIT 3 FOR NO KEY UPDATE SKIP LOCKED")}
            tasks = await asyncio.wait_for(second.claim("w.b", 6), 10)
            assert {t["id"] for t in tasks} == flows - held
        assert {t["id"] for t in await second.claim("w.b", 6)} == held
    finally:
        await first.close()
        await second.close()


async def test_commits_of_another_process_arrive_as_notifications_with_their_topics(postgres_url: str) -> None:
    writer, watcher = await FlowStore.open(postgres_url), await FlowStore.open(postgres_url)
    received: asyncio.Queue[set[Any] | None] = asyncio.Queue()
    watching = asyncio.create_task(watcher.engine.watch_commits(received.put_nowait))
    try:
        assert await asyncio.wait_for(received.get(), 10) is None  # listening: wake everything once
        await watcher.put_bundle("c" * 8, b"", "main.flow")  # its own commits are not echoed back
        flow = await writer.start_flow("c" * 8, {}, "/", "tester")
        assert await asyncio.wait_for(received.get(), 10) == {("runnable",)}
        assert received.empty()
        assert flow["status"] == "pending"
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await writer.close()
        await watcher.close()
    assert CHANNEL


async def test_a_server_that_is_gone_is_a_store_error_naming_the_db(postgres_cluster: Cluster) -> None:
    # a port nothing listens on
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreError, match=r"the Flow DB postgresql://postgres@127.0.0.1:\d+/nothing is unavailable"):
        await FlowStore.open(f"postgresql://postgres@127.0.0.1:{port}/nothing")
    with pytest.raises(StoreError, match="refused the connection: .*does not exist"):
        await FlowStore.open(postgres_cluster.url("no_such_database"))
