"""Recording a journal entry's result: at most once, waking the flow that waits on it (invariant 3)."""

from __future__ import annotations

import time
from typing import Any

from grid_local.db.engine import Engine, dumps


async def record_once(engine: Engine, flow_id: str, seq: int, result: dict[str, Any],
                      at: float | None = None) -> bool:
    """Record a result inside the current transaction; a suspended flow becomes runnable.
    Returns False when the entry was already answered (the first answer stands). ``at`` is the
    answer's time on the grid's clock (default: the system clock's now)."""
    if await engine.execute(
        "UPDATE journal SET result = ?, answered_at = ?, executor_expires = NULL "
        "WHERE flow_id = ? AND seq = ? AND result IS NULL",
        dumps(result), time.time() if at is None else at, flow_id, seq,
    ) != 1:
        return False
    engine.note("result", flow_id, seq)
    engine.note("runnable")
    await engine.execute(
        "UPDATE flows SET status = 'pending', runnable = 1, resumes = resumes + 1, updated = ? "
        "WHERE id = ? AND status = 'waiting'",
        time.time(), flow_id,
    )
    return True
