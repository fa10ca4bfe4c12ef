"""Flow DB queries of the triggers: webhooks and their deliveries, cron schedules and their fires.

Reached through the store facade (``FlowStore.triggers``). Each delivery and each fire is one
``BEGIN IMMEDIATE`` transaction that records it and starts (or messages) its flows together, so
a crash anywhere leaves either all of it or none of it.
"""

from __future__ import annotations

import time
from typing import Any

from grid_local.db.clock import GridClock
from grid_local.db.engine import Row, Engine, dumps, loads
from grid_local.db.flows import Flows
from grid_local.db.inboxes import Inboxes
from grid_local.db.rows import new_id, under
from grid_local.errors import NotFoundError, QuotaError
from grid_local.triggers import cron

FINISHED_SQL = "('completed', 'failed', 'cancelled')"


class TriggerStore:
    def __init__(self, engine: Engine, inboxes: Inboxes, flows: Flows, clock: GridClock) -> None:
        self.engine = engine
        self.clock = clock
        self.inboxes = inboxes
        self.flows = flows

    # -- webhooks -----------------------------------------------------------------------------

    async def put_hook(self, name: str, deployment: str, quota: str, username: str, signature: str,
                       secret: str | None, secret_source: str, target: str, inbox: str,
                       match_arg: str | None, match_source: str | None, caller: str = "/") -> dict[str, Any]:
        """Create or replace a hook; a name held by a node outside ``caller``'s subtree is refused
        (QuotaError 403) in the same transaction, so a name cannot change hands between check and write."""
        now = time.time()
        async with self.engine.transaction():
            await self._refuse_foreign("hooks", "hook", name, caller)
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
                if self.engine.dialect.lock():  # one delivery id, one answer, even when it arrives twice at once
                    await self.engine.one(f"SELECT name FROM hooks WHERE name = ?{self.engine.dialect.lock()}", hook["name"])
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
            sql += f" AND {self.engine.dialect.json_field_text('args')} = ?"
            params += [match["arg"], key]
        rows = await self.engine.all(sql + " ORDER BY created", *params)
        if not rows:
            which = f" with {match['arg']} = {key}" if match else ""
            raise NotFoundError(f"no running flow of deployment {hook['deployment']}{which} to deliver to")
        return [r["id"] for r in rows]

    async def _refuse_foreign(self, table: str, what: str, name: str, caller: str) -> None:
        row = await self.engine.one(f"SELECT quota FROM {table} WHERE name = ?", name)
        if row is not None and not under(row["quota"], caller):
            raise QuotaError(f"{what} {name} belongs to a quota node outside {caller} "
                             f"({what} names are shared by the grid: choose another)", status=403)

    # -- schedules ----------------------------------------------------------------------------


    async def put_schedule(self, name: str, deployment: str, quota: str, username: str, expression: str, tz: str,
                           args: dict[str, Any], overlap: str, catch_up: str, caller: str = "/") -> dict[str, Any]:
        """Create or replace a schedule; its next fire time is computed from now (a paused one stays paused).
        A name held by a node outside ``caller``'s subtree is refused, as for hooks."""
        now = await self.clock.now()
        next_fire = cron.next_after(expression, tz, now)
        async with self.engine.transaction():
            await self._refuse_foreign("schedules", "schedule", name, caller)
            await self.engine.execute(
                "INSERT INTO schedules (name, deployment, quota, username, cron, tz, args, overlap, catch_up, "
                "next_fire, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE "
                "SET deployment = excluded.deployment, quota = excluded.quota, username = excluded.username, "
                "cron = excluded.cron, tz = excluded.tz, args = excluded.args, overlap = excluded.overlap, "
                "catch_up = excluded.catch_up, next_fire = excluded.next_fire, updated = excluded.updated",
                name, deployment, quota, username, expression, tz, dumps(args), overlap, catch_up, next_fire,
                now, now,
            )
            self.engine.note("deadlines")
        return await self.get_schedule(name)

    async def get_schedule(self, name: str) -> dict[str, Any]:
        rows = await self._schedules("WHERE s.name = ?", name)
        if not rows:
            raise NotFoundError(f"no schedule named '{name}'")
        return rows[0]

    async def list_schedules(self) -> list[dict[str, Any]]:
        return await self._schedules("")

    async def _schedules(self, where: str, *params: Any) -> list[dict[str, Any]]:
        last = ("'fire_time'", "fire_time", "'outcome'", "outcome", "'flow_id'", "flow_id")
        rows = await self.engine.all(
            "SELECT s.*, (SELECT COUNT(*) FROM schedule_fires WHERE schedule = s.name AND outcome = 'started') AS started, "
            f"(SELECT {self.engine.dialect.json_object(*last)} FROM schedule_fires "
            f"WHERE schedule = s.name ORDER BY fire_time DESC LIMIT 1) AS last FROM schedules s {where} ORDER BY s.name",
            *params,
        )
        return [{
            "name": r["name"], "deployment": r["deployment"], "quota": r["quota"], "username": r["username"],
            "cron": r["cron"], "tz": r["tz"], "args": loads(r["args"]), "overlap": r["overlap"],
            "catch_up": r["catch_up"], "paused": bool(r["paused"]), "next_fire": r["next_fire"],
            "started": r["started"], "last": loads(r["last"]), "created": r["created"], "updated": r["updated"],
        } for r in rows]

    async def delete_schedule(self, name: str) -> None:
        async with self.engine.transaction():
            if await self.engine.execute("DELETE FROM schedules WHERE name = ?", name) != 1:
                raise NotFoundError(f"no schedule named '{name}'")
            await self.engine.execute("DELETE FROM schedule_fires WHERE schedule = ?", name)
            self.engine.note("deadlines")

    async def set_paused(self, name: str, paused: bool) -> dict[str, Any]:
        """Pause, or resume from now: fire times that passed while paused are not caught up."""
        schedule = await self.get_schedule(name)
        next_fire = cron.next_after(schedule["cron"], schedule["tz"], await self.clock.now()) if not paused else schedule["next_fire"]
        async with self.engine.transaction():
            await self.engine.execute("UPDATE schedules SET paused = ?, next_fire = ?, updated = ? WHERE name = ?",
                                      int(paused), next_fire, time.time(), name)
            self.engine.note("deadlines")
        return await self.get_schedule(name)

    async def due_schedules(self) -> list[dict[str, Any]]:
        rows = await self.engine.all("SELECT name, next_fire FROM schedules WHERE paused = 0 ORDER BY next_fire")
        return [dict(r) for r in rows]

    async def fire_schedule(self, name: str, expected: float | None) -> dict[str, Any] | None:
        """Handle a schedule's due fire times in one transaction: record each fire time (started,
        skipped or missed), start the flows, advance next_fire. ``expected`` is the next fire time
        the caller saw; a fire whose schedule has moved on since (fired by an earlier incarnation of
        the clock connector, paused, replaced) does nothing and returns None, so a fire time can
        never start two flows. ``expected=None`` fires now, outside the cron times (``schedule trigger``)."""
        now = await self.clock.now()
        async with self.engine.transaction():
            row = await self.engine.one(f"SELECT * FROM schedules WHERE name = ?{self.engine.dialect.lock()}", name)
            if row is None:
                if expected is None:
                    raise NotFoundError(f"no schedule named '{name}'")
                return None
            if expected is None:
                plan = cron.FirePlan(start=[now], next_fire=row["next_fire"])
            else:
                if row["paused"] or row["next_fire"] != expected or row["next_fire"] > now:
                    return None
                plan = cron.plan_fire(row["cron"], row["tz"], row["catch_up"], row["next_fire"], now)
            outcome: dict[str, Any] = {"name": name, "started": [], "skipped": [], "missed": plan.missed,
                                       "cancelled": [], "next_fire": plan.next_fire}
            for fire_time in plan.missed:
                await self.engine.execute("INSERT INTO schedule_fires (schedule, fire_time, outcome, at) "
                                          "VALUES (?, ?, 'missed', ?)", name, fire_time, now)
            args = loads(row["args"])
            for fire_time in plan.start:
                running = [r["flow_id"] for r in await self.engine.all(
                    "SELECT sf.flow_id FROM schedule_fires sf JOIN flows f ON f.id = sf.flow_id WHERE sf.schedule = ? "
                    f"AND f.status NOT IN {FINISHED_SQL}", name,
                )]
                if running and row["overlap"] == "skip":
                    await self.engine.execute("INSERT INTO schedule_fires (schedule, fire_time, outcome, at) "
                                              "VALUES (?, ?, 'skipped', ?)", name, fire_time, now)
                    outcome["skipped"].append(fire_time)
                    continue
                if running and row["overlap"] == "cancel-previous":
                    for flow_id in running:
                        outcome["cancelled"] += await self._cancel_tree(flow_id, f"cancelled by schedule {name}: a newer fire")
                try:
                    flow_id = await self._start_deployment_flow(row["deployment"], args, row["quota"], row["username"])
                except QuotaError as exc:  # a limit of the quota tree: this fire starts nothing
                    await self.engine.execute("INSERT INTO schedule_fires (schedule, fire_time, outcome, at) "
                                              "VALUES (?, ?, 'skipped', ?)", name, fire_time, now)
                    outcome["skipped"].append(fire_time)
                    outcome.setdefault("refused", []).append(str(exc))
                    continue
                await self.engine.execute("INSERT INTO schedule_fires (schedule, fire_time, outcome, flow_id, at) "
                                          "VALUES (?, ?, 'started', ?, ?)", name, fire_time, flow_id, now)
                outcome["started"].append(flow_id)
            if expected is not None:
                await self.engine.execute("UPDATE schedules SET next_fire = ? WHERE name = ? AND next_fire = ?",
                                          plan.next_fire, name, expected)
                self.engine.note("deadlines")
            return outcome

    async def _cancel_tree(self, flow_id: str, reason: str) -> list[str]:
        """Cancel a flow and its unfinished descendants inside the caller's transaction."""
        rows = await self.engine.all(
            "WITH RECURSIVE tree(id) AS (SELECT ? UNION ALL SELECT f.id FROM flows f JOIN tree ON f.parent = tree.id) "
            f"SELECT flows.* FROM flows JOIN tree USING (id) WHERE flows.status NOT IN {FINISHED_SQL}",
            flow_id,
        )
        for row in rows:
            await self.flows.end(row, "cancelled", error={"message": reason, "traceback": ""})
        return [row["id"] for row in rows]

    async def _start_deployment_flow(self, deployment: str, args: dict[str, Any], quota: str,
                                     username: str) -> str:
        """Insert a root flow of the deployment's current bundle, inside the caller's transaction
        (as ``FlowStore.start_flow`` does in a statement of its own; the flow_created trigger
        records the event)."""
        flow_id = new_id()
        now = time.time()
        found = await self.engine.one("SELECT digest FROM deployments WHERE name = ?", deployment)
        if found is None:
            raise NotFoundError(f"no deployment named {deployment!r}")
        caps = await self.flows.quotas.admit(quota, found["digest"])  # QuotaError: the quota tree refuses it
        entry_sql = self.engine.dialect.json_object("'module'", "b.entry", "'function'", "NULL")
        rows = await self.engine.all(
            "INSERT INTO flows (id, parent, root, name, bundle, entry, args, quota, username, status, created, "
            "updated, runnable, journal_cap, bytes_cap) SELECT ?, NULL, ?, d.name, b.digest, "
            f"{entry_sql}, ?, ?, ?, 'pending', ?, ?, 1, ?, ? "
            "FROM deployments d JOIN bundles b ON b.digest = d.digest WHERE d.name = ? RETURNING id",
            flow_id, flow_id, dumps(args), quota, username, now, now, caps.journal_entries, caps.journal_bytes,
            deployment,
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
