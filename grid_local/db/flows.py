"""Flows: starting (root and child), reading, listing, ending, cancelling, and the outcome of children.

A flow's end answers a parent's open ``wait`` on it in the same transaction; the ``flow_created``
and ``flow_finished`` triggers write the events (``db/schema.py``).
"""

from __future__ import annotations

import time
from typing import Any

from grid_local import quota_tree as qt
from grid_local.db.engine import Row, Engine, dumps, loads
from grid_local.db.leases import check_held
from grid_local.db.quotas import Quotas
from grid_local.db.secrets import Secrets
from grid_local.db.results import record_once
from grid_local.db.rows import flow_json, new_id
from grid_local.errors import NotFoundError, QuotaError
from grid_local.records import FlowRecord
from grid_local.runtime import journal as jr
from grid_local.runtime import rules


class Flows:
    def __init__(self, engine: Engine, quotas: Quotas, secrets: Secrets) -> None:
        self.engine = engine
        self.quotas = quotas
        self.secrets = secrets

    async def start_flow(self, bundle: str, args: dict[str, Any], quota: str, username: str,
                         name: str | None = None) -> FlowRecord:
        """Start a root flow at the bundle's entry script. Without a hard limit on its quota ancestry
        this is one INSERT, which also proves the bundle exists (and whose trigger records the event);
        otherwise the quota checks and the INSERT are one transaction (a refusal writes nothing)."""
        flow_id = new_id()
        now = time.time()
        entry_sql = self.engine.dialect.json_object("'module'", "b.entry", "'function'", "NULL")
        sql = ("INSERT INTO flows (id, parent, root, name, bundle, entry, args, quota, username, status, "
               "created, updated, runnable, journal_cap, bytes_cap) SELECT ?, NULL, ?, COALESCE(?, b.entry), b.digest, "
               f"{entry_sql}, ?, ?, ?, 'pending', ?, ?, 1, ?, ? "
               "FROM bundles b WHERE b.digest = ? RETURNING *")
        caps = await self.quotas.plan_start(quota)
        if caps is not None:
            rows = await self.engine.write_statement(
                sql, (flow_id, flow_id, name, dumps(args), quota, username, now, now, caps.journal_entries,
                      caps.journal_bytes, bundle),
                notes={("runnable",)},
            )
        else:
            async with self.engine.transaction():
                if await self.engine.one("SELECT 1 FROM bundles WHERE digest = ?", bundle) is None:
                    raise NotFoundError(f"no bundle {bundle}")
                caps = await self.quotas.admit(quota, bundle)
                rows = await self.engine.all(sql, flow_id, flow_id, name, dumps(args), quota, username, now, now,
                                             caps.journal_entries, caps.journal_bytes, bundle)
                self.engine.note("runnable")
        if not rows:
            raise NotFoundError(f"no bundle {bundle}")
        return flow_json(rows[0])

    async def start_child(self, parent: Row, args: dict[str, Any]) -> dict[str, Any]:
        """Answer a ``run`` request: the child starts in the parent's bundle, quota and user, unless a
        hard limit of the quota's ancestry refuses it (then the ``run`` fails, and no child exists)."""
        child_id = new_id()
        now = time.time()
        entry = rules.child_entry(args)
        grant, why = await self.secrets.grant_for_child(parent, args["flow"].get("secrets"))
        if grant is None:  # an unknown, not-owned or widened secret: the child never starts
            return jr.err(f"run {rules.child_name(args)}: {why}")
        if grant:
            entry["secrets"] = grant
        try:
            caps = await self.quotas.plan_start(parent["quota"]) or await self.quotas.admit(parent["quota"], None)
        except QuotaError as exc:
            return jr.err(f"run {rules.child_name(args)}: {exc}")
        await self.engine.execute(
            "INSERT INTO flows (id, parent, root, name, bundle, entry, args, quota, username, status, created, "
            "updated, runnable, journal_cap, bytes_cap) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, 1, ?, ?)",
            child_id, parent["id"], parent["root"], rules.child_name(args), parent["bundle"],
            dumps(entry), dumps(rules.child_args(args)), parent["quota"], parent["username"],
            now, now, caps.journal_entries, caps.journal_bytes,
        )
        self.engine.note("runnable")
        return rules.started(child_id, args)

    async def get_flow(self, flow_id: str) -> FlowRecord:
        row = await self.engine.one("SELECT * FROM flows WHERE id = ?", flow_id)
        if row is None:
            raise NotFoundError(f"no flow {flow_id}")
        return flow_json(row)

    async def list_flows(
        self, status: str | None = None, root: str | None = None, quota: str = "/", limit: int = 500,
        roots_only: bool = False, username: str | None = None,
    ) -> list[FlowRecord]:
        sql = "SELECT * FROM flows WHERE 1 = 1"
        params: list[Any] = []
        if username is not None:
            sql += " AND username = ?"
            params.append(username)
        if status:
            sql += " AND status = ?"
            params.append(status)
        if root:
            sql += " AND root = ?"
            params.append(root)
        if roots_only:
            sql += " AND parent IS NULL"
        if quota != "/":  # the tenant filter is in the query, so the limit counts only the caller's flows
            sql += f" AND {qt.subtree_sql()}"
            params.extend(qt.subtree_params(quota))
        sql += " ORDER BY created DESC LIMIT ?"
        params.append(limit)
        rows = await self.engine.all(sql, *params)
        return [flow_json(r) for r in rows]

    async def finished_among(self, flow_ids: list[str]) -> list[str]:
        """Which of these flows have ended (their resources can be closed)."""
        if not flow_ids:
            return []
        marks = ",".join("?" * len(flow_ids))
        rows = await self.engine.all(
            f"SELECT id FROM flows WHERE id IN ({marks}) AND status IN ('completed', 'failed', 'cancelled')",
            *flow_ids,
        )
        known = {r["id"] for r in await self.engine.all(f"SELECT id FROM flows WHERE id IN ({marks})", *flow_ids)}
        # A flow the Flow DB never heard of (a database wiped under the workspaces) has ended too.
        return sorted({r["id"] for r in rows} | (set(flow_ids) - known))

    async def add_injection(self, flow_id: str, action: str, seconds: float = 0.0) -> None:
        """Arm a failure injection: the flow's next request fails, or its answer is delayed."""
        async with self.engine.transaction():
            if await self.engine.one("SELECT 1 FROM flows WHERE id = ?", flow_id) is None:
                raise NotFoundError(f"no flow {flow_id}")
            await self.engine.execute(
                "INSERT INTO injections (flow_id, action, seconds, created) VALUES (?, ?, ?, ?)",
                flow_id, action, seconds, time.time(),
            )

    # -- ending ---------------------------------------------------------------------------------

    async def finish(self, flow_id: str, worker: str, epoch: int, status: str, result: Any = None,
                     error: dict[str, Any] | None = None) -> None:
        """The lease holder ends its flow."""
        now = time.time()
        # A root flow held by this worker ends in one statement; children (a parent may wait on them)
        # and refusals (to say why) take the full path.
        ended = await self.engine.write_statement(
            "UPDATE flows SET status = ?, result = ?, error = ?, finished = ?, updated = ?, lease_owner = NULL, "
            "lease_expires = NULL, runnable = 0 WHERE id = ? AND parent IS NULL AND lease_owner = ? "
            "AND lease_epoch = ? AND status NOT IN ('completed', 'failed', 'cancelled') RETURNING id",
            (status, dumps(result), None if error is None else dumps(error), now, now, flow_id, worker, epoch),
            notes={("finished", flow_id), ("runnable",)} if self.quotas.running_limited else {("finished", flow_id)},
        )
        if ended:
            return
        async with self.engine.transaction():
            flow = check_held(await self.engine.one(f"SELECT * FROM flows WHERE id = ?{self.engine.dialect.lock()}", flow_id),
                              flow_id, worker, epoch)
            await self.end(flow, status, result, error)

    async def cancel_flow(self, flow_id: str, reason: str = "cancelled") -> list[str]:
        """Cancel a flow and its unfinished descendants; returns the ids cancelled."""
        async with self.engine.transaction():
            if await self.engine.one("SELECT 1 FROM flows WHERE id = ?", flow_id) is None:
                raise NotFoundError(f"no flow {flow_id}")
            rows = await self.engine.all(
                "WITH RECURSIVE tree(id) AS (SELECT ? UNION ALL SELECT f.id FROM flows f JOIN tree ON f.parent = tree.id) "
                "SELECT flows.* FROM flows JOIN tree USING (id) WHERE flows.status NOT IN ('completed', 'failed', 'cancelled')",
                flow_id,
            )
            for row in rows:
                await self.end(row, "cancelled", error={"message": reason, "traceback": ""})
            return [row["id"] for row in rows]

    async def end(self, flow: Row, status: str, result: Any = None, error: dict[str, Any] | None = None) -> None:
        """End a flow (``flow`` is its row as read in this transaction) and answer a parent waiting on it."""
        now = time.time()
        flow_id = flow["id"]
        if not await self.engine.execute(
            "UPDATE flows SET status = ?, result = ?, error = ?, finished = ?, updated = ?, lease_owner = NULL, "
            "lease_expires = NULL, runnable = 0 WHERE id = ? AND status NOT IN ('completed', 'failed', 'cancelled')",
            status, dumps(result), None if error is None else dumps(error), now, now, flow_id,
        ):
            return  # it ended meanwhile (PostgreSQL: another transaction ended it since ``flow`` was read)
        self.engine.note("finished", flow_id)  # (the flow_finished trigger records the event)
        self.quotas.room_freed()
        if flow["parent"] is None:
            return
        if self.engine.dialect.lock():  # siblings ending at once: each must see the others' ends (one of them answers the wait)
            await self.engine.one(f"SELECT id FROM flows WHERE id = ?{self.engine.dialect.lock()}", flow["parent"])
        for row in await self.engine.all(
            "SELECT seq, args FROM journal WHERE flow_id = ? AND kind = 'wait' AND result IS NULL", flow["parent"]
        ):
            args = loads(row["args"])
            if any(isinstance(t, dict) and t.get("flow_id") == flow_id for t in args.get("tasks") or []):
                resolved = await self.wait_result(args, timed_out=False)
                if resolved is not None:
                    await record_once(self.engine, flow["parent"], row["seq"], resolved)

    async def wait_result(self, args: dict[str, Any], timed_out: bool) -> dict[str, Any] | None:
        """The answer to a wait on child flows (``rules.wait_outcome``); None while one is still running."""
        ids = rules.waited_ids(args)
        if ids and not timed_out:
            # Cheap test first: a parent waiting on many children is re-checked as each one ends.
            running = await self.engine.the(
                f"SELECT COUNT(*) AS n FROM flows WHERE id IN ({_marks(ids)}) "
                "AND status NOT IN ('completed', 'failed', 'cancelled')",
                *ids,
            )
            if running["n"]:
                return None
        return rules.wait_outcome(args, await self.children(ids), timed_out)

    async def children(self, ids: list[str]) -> dict[str, rules.Child]:
        """What a wait needs to know of these flows (those that exist)."""
        if not ids:
            return {}
        rows = await self.engine.all(
            f"SELECT id, name, status, result, error FROM flows WHERE id IN ({_marks(ids)})", *ids
        )
        return {row["id"]: rules.Child(row["id"], row["name"], row["status"], loads(row["result"]), loads(row["error"]))
                for row in rows}


def _marks(values: list[Any]) -> str:
    return ",".join("?" * len(values))
