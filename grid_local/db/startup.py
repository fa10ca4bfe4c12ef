"""What a starting grid does to its Flow DB before any process uses it: check it, then clear what
the previous grid instance left held.

On SQLite the file is checked page by page (``quick_check``); on PostgreSQL the server must answer,
the database must exist and its schema must not be newer than this Flowmetal (opening it migrates
an older one); then, on both, the previous grid's leases are released.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from pathlib import Path

from grid_local.db.store import FlowStore
from grid_local.errors import StoreError

REMEDY = "move it away to start with an empty Flow DB, or restore a copy"


def check_flow_db(path: Path) -> None:
    """Refuse a Flow DB that is not an SQLite database or is damaged (``PRAGMA quick_check``: every
    page and record is read, so damage in the middle of the file is found too)."""
    if not path.exists() or path.stat().st_size == 0:
        return  # a new grid: the schema is created on open
    try:
        with sqlite3.connect(path, timeout=10.0) as db:
            found = [str(row[0]) for row in db.execute("PRAGMA quick_check(5)")]
        db.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"the Flow DB {path} is not usable: {exc} ({REMEDY})") from None
    # One line: quick_check's rows can hold several lines, and a "*** in database main ***" header.
    problems = [line for text in found for line in text.splitlines() if line and not line.startswith("***")]
    if problems != ["ok"]:
        raise StoreError(f"the Flow DB {path} is damaged: {'; '.join(problems)} ({REMEDY})")


async def _release_previous_grid(target: str | Path, clock: str) -> tuple[int, int]:
    try:
        store = await FlowStore.open(target)  # (PostgreSQL: StoreError when unavailable, refused or too new)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"the Flow DB {target} is not usable: {exc} ({REMEDY})") from None
    try:
        await store.clock.set_mode(clock)
        return await store.release_previous_grid()
    finally:
        await store.close()


def prepare_flow_db(target: str | Path, clock: str = "real") -> tuple[int, int]:
    """Check the Flow DB (a file, or a ``postgresql://`` URL), migrate it, set the grid's clock (real
    or virtual), and release the previous grid's holdings.

    Returns (flows released, requests declared interrupted)."""
    if isinstance(target, Path):
        check_flow_db(target)
    return asyncio.run(_release_previous_grid(target, clock))


def main() -> None:
    """Run by a starting supervisor (``Supervisor.prepare_db``): the reason it failed on one line
    starting ``error:``, else what it released, as JSON."""
    parser = argparse.ArgumentParser(prog="python -m grid_local.db.startup",
                                     description="Check and prepare a Flow DB (its target on stdin).")
    parser.add_argument("--clock", choices=["real", "virtual"], default="real")
    parser.add_argument("--file", action="store_true", help="the target is an SQLite file, not a URL")
    options = parser.parse_args()
    text = sys.stdin.read().strip()
    target: str | Path = Path(text) if options.file else text
    try:
        flows, requests = prepare_flow_db(target, options.clock)
    except StoreError as exc:
        print(f"error: {exc}", flush=True)
        sys.exit(1)
    print(json.dumps({"flows": flows, "requests": requests}), flush=True)


if __name__ == "__main__":
    main()
