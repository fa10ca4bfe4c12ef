"""The event log: what ``logs``, ``run`` and the TUI follow, read in id order."""

from __future__ import annotations

from grid_local.db.engine import Engine
from grid_local.db.rows import event_json
from grid_local.records import EventRecord


class Events:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def events_after(self, after: int, root: str | None = None, limit: int = 1000) -> list[EventRecord]:
        if root:
            rows = await self.engine.all(
                "SELECT * FROM events WHERE root = ? AND id > ? ORDER BY id LIMIT ?", root, after, limit
            )
        else:
            rows = await self.engine.all("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", after, limit)
        return [event_json(r) for r in rows]
