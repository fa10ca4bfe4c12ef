"""Flow DB queries of the triggers: webhooks and their deliveries, cron schedules and their fires.

Reached through the store facade (``FlowStore.triggers``). Each delivery and each fire is one
``BEGIN IMMEDIATE`` transaction that records it and starts (or messages) its flows together, so
a crash anywhere leaves either all of it or none of it.
"""

from __future__ import annotations

import time
from typing import Any

from grid_local.db.engine import Row, SqliteEngine, dumps, loads
from grid_local.db.inboxes import Inboxes
from grid_local.db.rows import new_id
from grid_local.errors import NotFoundError

FINISHED_SQL = "('completed', 'failed', 'cancelled')"


class TriggerStore:
    def __init__(self, engine: SqliteEngine, inboxes: Inboxes) -> None:
        self.engine = engine
        self.inboxes = inboxes

    # -- webhooks -----------------------------------------------------------------------------

    async def put_hook(self, name: str, deployment: str, quota: str, username: str, signature: str,
                       secret: str | None, secret_source: str, target: str, inbox: str,
                       match_arg: str | None, match_source: str | None) -> dict[str, Any]:
        now = time.time()
        async with self.engine.transaction():
            await self.engine.execute(
                "INSERT INTO hooks (name, deployment, quota, username, signature, secret, secret_source, target, "
                "inbox, match_arg, match_source, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET deployment = excluded.deployment, quota = excluded.quota, "
                "username = excluded.username, signature = excluded.signature, secret = excluded.secret, "
                "secret_source = excluded.secret_source, target = excluded.target, inbox = excluded.inbox, "
                "match_arg = excluded.match_arg, match_source = excluded.match_source, updated = excluded.updated",
                name, deployment, quota, username, signature, secret, secret_source, target, inbox, match_arg,
                match_source, now, now,
            )
        return await self.get_hook(name)

    async def get_hook(self, name: str, with_secret: bool = False) -> dict[str, Any]:
        row = await self.engine.one("SELECT * FROM hooks WHERE name = ?", name)
        if row is None:
            raise NotFoundError(f"no hook named '{name}'")
        return _hook_json(row, with_secret)

    async def list_hooks(self) -> list[dict[str, Any]]:
        return [_hook_json(r, False) for r in await self.engine.all("SELECT * FROM hooks ORDER BY name")]

    async def delete_hook(self, name: str) -> None:
        async with self.engine.transaction():
            if await self.engine.execute("DELETE FROM hooks WHERE name = ?", name) != 1:
                raise NotFoundError(f"no hook named '{name}'")
            await self.engine.execute("DELETE FROM hook_deliveries WHERE hook = ?", name)

    async def deliver_hook(self, hook: dict[str, Any], request: dict[str, Any], delivery: str | None,
                           key: str | None) -> tuple[list[str], bool]:
        """Start the hook's flow (or message its running flows); returns (flow ids, redelivered).

        A delivery id seen before starts nothing and returns the first delivery's flows. An inbox
        hook with no running flow to take the request raises NotFoundError and writes nothing."""
        async with self.engine.transaction():
            if delivery is not None:
                seen = await self.engine.one(
                    "SELECT flow_ids FROM hook_deliveries WHERE hook = ? AND delivery = ?", hook["name"], delivery
                )
                if seen is not None:
                    return list(loads(seen["flow_ids"])), True
            if hook["to"] == "start":
                flow_ids = [await self._start_deployment_flow(hook["deployment"], {"request": request},
                                                              hook["quota"], hook["username"])]
            else:
                flow_ids = await self._inbox_targets(hook, key)
                for flow_id in flow_ids:
                    await self.inboxes.insert_message(flow_id, hook["inbox"], request, f"hook:{hook['name']}")
                    await self.inboxes.deliver(flow_id, hook["inbox"])
            if delivery is not None:
                await self.engine.execute(
                    "INSERT INTO hook_deliveries (hook, delivery, flow_ids, created) VALUES (?, ?, ?, ?)",
                    hook["name"], delivery, dumps(flow_ids), time.time(),
                )
            return flow_ids, False

    async def _inbox_targets(self, hook: dict[str, Any], key: str | None) -> list[str]:
        sql = (f"SELECT id FROM flows WHERE parent IS NULL AND name = ? AND quota = ? AND status NOT IN {FINISHED_SQL}")
        params: list[Any] = [hook["deployment"], hook["quota"]]
        match = hook.get("match")
        if match:
            if key is None:
                raise NotFoundError(f"the request has no {match['source']} to route it by")
            sql += " AND CAST(json_extract(args, ?) AS TEXT) = ?"
            params += [f"$.{match['arg']}", key]
        rows = await self.engine.all(sql + " ORDER BY created", *params)
        if not rows:
            which = f" with {match['arg']} = {key}" if match else ""
            raise NotFoundError(f"no running flow of deployment {hook['deployment']}{which} to deliver to")
        return [r["id"] for r in rows]

    async def _start_deployment_flow(self, deployment: str, args: dict[str, Any], quota: str,
                                     username: str) -> str:
        """Insert a root flow of the deployment's current bundle, inside the caller's transaction
        (as ``FlowStore.start_flow`` does in a statement of its own; the flow_created trigger
        records the event)."""
        flow_id = new_id()
        now = time.time()
        rows = await self.engine.all(
            "INSERT INTO flows (id, parent, root, name, bundle, entry, args, quota, username, status, created, "
            "updated, runnable) SELECT ?, NULL, ?, d.name, b.digest, json_object('module', b.entry, 'function', NULL), "
            "?, ?, ?, 'pending', ?, ?, 1 FROM deployments d JOIN bundles b ON b.digest = d.digest WHERE d.name = ? "
            "RETURNING id",
            flow_id, flow_id, dumps(args), quota, username, now, now, deployment,
        )
        if not rows:
            raise NotFoundError(f"no deployment named {deployment!r}")
        self.engine.note("runnable")
        return flow_id


def _hook_json(row: Row, with_secret: bool) -> dict[str, Any]:
    hook = {
        "name": row["name"], "deployment": row["deployment"], "quota": row["quota"], "username": row["username"],
        "signature": row["signature"], "has_secret": bool(row["secret"]), "secret_source": row["secret_source"],
        "to": row["target"], "inbox": row["inbox"],
        "match": {"arg": row["match_arg"], "source": row["match_source"]} if row["match_arg"] else None,
        "created": row["created"], "updated": row["updated"],
    }
    if with_secret:
        hook["secret"] = row["secret"]
    return hook
