"""The store suite: the Flow DB's invariants checked on the Flow DB itself, on every engine.

On PostgreSQL each test gets a fresh database of a private cluster the session starts
(``tests/postgres_cluster.py``); without server binaries those tests skip, and CI makes that a failure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from grid_local.db.store import FlowStore
from tests.postgres_cluster import postgres_cluster, postgres_url  # noqa: F401 (fixtures)

ENGINES = ["sqlite", "postgres"]


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def flow_db(engine_name: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where the test's Flow DB is: an SQLite file, or a fresh PostgreSQL database."""
    if engine_name == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "flow.db")


@pytest.fixture
async def store(flow_db: str) -> AsyncIterator[FlowStore]:
    opened = await FlowStore.open(flow_db)
    try:
        yield opened
    finally:
        await opened.close()
