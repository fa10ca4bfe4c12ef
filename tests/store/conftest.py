"""The store suite: the Flow DB's invariants checked on the Flow DB itself, on every engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from grid_local.db.store import FlowStore

ENGINES = ["sqlite"]


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(engine_name: str, tmp_path: Path) -> AsyncIterator[FlowStore]:
    opened = await FlowStore.open(tmp_path / "flow.db")
    try:
        yield opened
    finally:
        await opened.close()
