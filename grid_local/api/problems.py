"""The Flow DB's failures as HTTP answers both APIs give: a full disk is 507, a locked or failing
database 503 (a PostgreSQL server that is down, refuses connections or dropped one: 503
``db_unavailable``), each with a message that names the cause, never a bare 500.

Both answers mean that nothing was written (the transaction was rolled back), so a caller may
retry the same request once the cause is gone; workers and connectors do (api/wire.py).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from grid_local.errors import StoreError

RETRY_AFTER_SECONDS = 1
"""What the Retry-After header of a 503 or 507 suggests."""


def storage_problem(exc: BaseException, db: Path | str) -> tuple[int, str, str] | None:
    """(status, error, message) for a failure of the Flow DB itself; None for anything else."""
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, sqlite3.OperationalError) and "full" in lowered:
        return 507, "disk_full", f"the Flow DB {db} cannot grow: the disk is full ({text}); nothing was written"
    if isinstance(exc, (sqlite3.OperationalError, StoreError)) and ("locked" in lowered or "busy" in lowered):
        return 503, "db_locked", f"the Flow DB {db} is locked by another process ({text}); nothing was written"
    if isinstance(exc, StoreError) and "is unavailable" in lowered:  # (db/postgres.py: the server is gone)
        return 503, "db_unavailable", f"{text}; retry once it is back"
    if isinstance(exc, sqlite3.OperationalError) and "disk i/o" in lowered:
        return 503, "db_unavailable", f"the Flow DB {db} could not be written ({text}); nothing was written"
    return None
