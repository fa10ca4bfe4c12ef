"""Bundles (content-addressed archives) and deployments (names pointing at a bundle)."""

from __future__ import annotations

import time
from typing import Any

from grid_local.db.engine import SqliteEngine
from grid_local.db.rows import under
from grid_local.errors import NotFoundError


class Bundles:
    def __init__(self, engine: SqliteEngine) -> None:
        self.engine = engine

    async def put_bundle(self, digest: str, data: bytes, entry: str) -> bool:
        """Store a bundle; returns False when the grid already held it (uploads are idempotent)."""
        async with self.engine.transaction():
            return await self.engine.execute(
                "INSERT OR IGNORE INTO bundles (digest, data, entry, size, created) VALUES (?, ?, ?, ?, ?)",
                digest, data, entry, len(data), time.time(),
            ) == 1

    async def has_bundle(self, digest: str) -> bool:
        return await self.engine.one("SELECT 1 FROM bundles WHERE digest = ?", digest) is not None

    async def get_bundle(self, digest: str) -> bytes:
        row = await self.engine.one("SELECT data FROM bundles WHERE digest = ?", digest)
        if row is None:
            raise NotFoundError(f"no bundle {digest}")
        return bytes(row["data"])

    async def put_deployment(self, name: str, digest: str, quota: str) -> None:
        now = time.time()
        async with self.engine.transaction():
            await self.engine.execute(
                "INSERT INTO deployments (name, digest, quota, created, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET digest = excluded.digest, quota = excluded.quota, "
                "updated = excluded.updated",
                name, digest, quota, now, now,
            )

    async def list_deployments(self, quota_prefix: str = "/") -> list[dict[str, Any]]:
        rows = await self.engine.all("SELECT * FROM deployments ORDER BY name")
        return [dict(r) for r in rows if under(r["quota"], quota_prefix)]

    async def get_deployment(self, name: str) -> dict[str, Any]:
        row = await self.engine.one("SELECT * FROM deployments WHERE name = ?", name)
        if row is None:
            raise NotFoundError(f"no deployment named '{name}'")
        return dict(row)
