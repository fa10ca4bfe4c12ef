"""Bundles (content-addressed archives) and deployments (names pointing at a bundle).

A bundle belongs to every quota node that uploaded it (``bundle_owners``): on a grid with tokens a
caller sees a bundle only when its own subtree owns it, so knowing a digest is not a key to it. A
deployment belongs to the node that made it and is replaced only by a caller whose subtree holds it.
``owner=None`` (the local grid, and the Worker API) sees every bundle.
"""

from __future__ import annotations

import time

from grid_local import quota_tree as qt
from grid_local.db.engine import Engine
from grid_local.db.rows import deployment_json, under
from grid_local.errors import NotFoundError
from grid_local.records import DeploymentRecord


class Bundles:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def put_bundle(self, digest: str, data: bytes, entry: str, owner: str | None = None) -> bool:
        """Store a bundle for ``owner``; False when that owner already held it (uploads are idempotent)."""
        async with self.engine.transaction():
            created = await self.engine.execute(
                "INSERT INTO bundles (digest, data, entry, size, created) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                digest, data, entry, len(data), time.time(),
            ) == 1
            if owner is None:
                return created
            return await self.engine.execute(
                "INSERT INTO bundle_owners (digest, quota, created) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                digest, owner, time.time(),
            ) == 1

    async def has_bundle(self, digest: str, owner: str | None = None) -> bool:
        """Whether the grid holds the bundle (for ``owner``: whether a node of that subtree uploaded it)."""
        if owner is None:
            return await self.engine.one("SELECT 1 FROM bundles WHERE digest = ?", digest) is not None
        return await self.engine.one(
            f"SELECT 1 FROM bundle_owners WHERE digest = ? AND {qt.subtree_sql()}", digest, *qt.subtree_params(owner),
        ) is not None

    async def get_bundle(self, digest: str, owner: str | None = None) -> bytes:
        row = await self.engine.one("SELECT data FROM bundles WHERE digest = ?", digest)
        if row is None or (owner is not None and not await self.has_bundle(digest, owner)):
            raise NotFoundError(f"no bundle {digest}")
        return bytes(row["data"])

    async def put_deployment(self, name: str, digest: str, quota: str) -> bool:
        """Register or replace a deployment; False (and nothing written) when the name belongs to a node
        outside ``quota``'s subtree. A replaced deployment keeps the node it belongs to."""
        now = time.time()
        async with self.engine.transaction():
            row = await self.engine.one("SELECT quota FROM deployments WHERE name = ?", name)
            if row is not None and not qt.under(row["quota"], quota):
                return False
            await self.engine.execute(
                "INSERT INTO deployments (name, digest, quota, created, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET digest = excluded.digest, updated = excluded.updated",
                name, digest, quota, now, now,
            )
            return True

    async def list_deployments(self, quota_prefix: str = "/") -> list[DeploymentRecord]:
        rows = await self.engine.all("SELECT * FROM deployments ORDER BY name")
        return [deployment_json(r) for r in rows if under(r["quota"], quota_prefix)]

    async def get_deployment(self, name: str) -> DeploymentRecord:
        row = await self.engine.one("SELECT * FROM deployments WHERE name = ?", name)
        if row is None:
            raise NotFoundError(f"no deployment named '{name}'")
        return deployment_json(row)
