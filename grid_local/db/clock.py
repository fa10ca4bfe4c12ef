"""The grid's clock: the time flows see (``now()``, sleeps, receive and wait timeouts, schedules).

Real (the default): the system clock. Virtual (``flowmetal grid up --clock virtual``): a time kept in
the Flow DB (``grid_clock``) that stands still while anything can make progress, and jumps to the
next deadline (a sleep's end, a receive or wait timeout, a schedule's next fire) only when nothing
can progress except by time passing. Leases and other bookkeeping stay on the system clock.
"""

from __future__ import annotations

import time

from grid_local.db.engine import Engine

MODES = ("real", "virtual")

# Something can make progress without time passing: a flow runnable or running between actions
# (its journal has no open sleep, receive or wait), or a request in flight at a connector.
_BUSY = (
    "SELECT 1 FROM flows f WHERE f.status IN ('pending', 'running') AND (f.runnable = 1 OR NOT EXISTS "
    "(SELECT 1 FROM journal j WHERE j.flow_id = f.id AND j.result IS NULL AND j.kind IN ('sleep', 'receive', 'wait'))) "
    "UNION ALL SELECT 1 FROM journal WHERE result IS NULL AND kind IN ('http', 'open', 'exec') LIMIT 1"
)
_NEXT_DEADLINE = (
    "SELECT MIN(at) AS at FROM (SELECT MIN(deadline) AS at FROM journal WHERE result IS NULL AND deadline IS NOT NULL "
    "UNION ALL SELECT MIN(next_fire) FROM schedules WHERE paused = 0) AS deadlines"
)


class GridClock:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.virtual = False

    async def load(self) -> None:
        """Read the mode the grid was started with (it does not change while the grid runs)."""
        row = await self.engine.one("SELECT mode FROM grid_clock WHERE id = 1")
        self.virtual = row is not None and row["mode"] == "virtual"

    async def set_mode(self, mode: str) -> None:
        """Called once by a starting grid. A virtual clock goes on from the virtual time it had
        reached; one that was real starts at the system clock's time."""
        if mode not in MODES:
            raise ValueError(f"clock mode must be real or virtual, not {mode!r}")
        async with self.engine.transaction():
            await self.engine.execute(
                "INSERT INTO grid_clock (id, mode, now) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "now = CASE WHEN grid_clock.mode = 'virtual' AND excluded.mode = 'virtual' THEN grid_clock.now "
                "ELSE excluded.now END, mode = excluded.mode",
                mode, time.time(),
            )
        self.virtual = mode == "virtual"

    async def now(self) -> float:
        if not self.virtual:
            return time.time()
        return float((await self.engine.the("SELECT now FROM grid_clock WHERE id = 1"))["now"])

    async def advance_if_idle(self) -> float | None:
        """Virtual clock: when nothing can make progress except by time, jump to the next deadline
        (one transaction, so nothing can start in between); returns the new time, or None."""
        if not self.virtual:
            return None
        async with self.engine.transaction():
            if self.engine.dialect.lock():  # one jump at a time
                await self.engine.one(f"SELECT now FROM grid_clock WHERE id = 1{self.engine.dialect.lock()}")
            if await self.engine.one(_BUSY) is not None:
                return None
            following = (await self.engine.the(_NEXT_DEADLINE))["at"]
            now = float((await self.engine.the("SELECT now FROM grid_clock WHERE id = 1"))["now"])
            if following is None or following <= now:
                return None
            await self.engine.execute("UPDATE grid_clock SET now = ? WHERE id = 1", following)
            self.engine.note("deadlines")
            return float(following)
