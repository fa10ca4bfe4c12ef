"""Leases: a flow is leased to one worker at an epoch, an open request to one connector.

Every write of a worker is conditional on its lease (``check_held``; invariant 2). A worker that
goes silent loses its flows when its lease expires (they become runnable, another worker replays
them); a connector that goes silent has its requests declared failed, never re-sent (invariant 5).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from grid_local import quota_tree as qt
from grid_local.db.engine import Row, Engine, dumps, loads
from grid_local.db.quotas import Quotas
from grid_local.db.results import record_once
from grid_local.db.rows import journal_entry, worker_task
from grid_local.errors import LeaseLostError, NotFoundError
from grid_local.records import WorkerTask
from grid_local.runtime import journal as jr
from grid_local.runtime.journal import JournalEntry

if TYPE_CHECKING:
    from grid_local.db.flows import Flows  # (flows.py imports check_held from here)

LEASE_SECONDS = 10.0
EXECUTOR_GRACE = 5.0
MAX_WORKER_DEATHS = 3
"""Worker deaths while evaluating a flow (with no progress in between) after which the flow fails."""


def check_held(row: Row | None, flow_id: str, worker: str, epoch: int) -> Row:
    """Writes are conditional on the lease: only its current holder, at its current epoch."""
    if row is None:
        raise NotFoundError(f"no flow {flow_id}")
    if row["status"] == "cancelled":
        raise LeaseLostError("cancelled")
    if row["lease_owner"] != worker or row["lease_epoch"] != epoch:
        raise LeaseLostError(f"flow {flow_id} is not leased to {worker} (epoch {epoch})")
    return row


class Leases:
    def __init__(self, engine: Engine, quotas: Quotas, flows: Flows) -> None:
        self.engine = engine
        self.quotas = quotas
        self.flows = flows

    # -- flows leased to workers ----------------------------------------------------------------

    async def claim(self, worker: str, limit: int) -> list[WorkerTask]:
        """Lease up to ``limit`` runnable flows to ``worker``; returns their tasks with journals.

        Which flows is the quota tree's to say (``Quotas.pick``: fair across nodes, none past a running
        limit); one UPDATE ... RETURNING leases them all and one SELECT reads their journals."""
        if await self.engine.one("SELECT 1 FROM flows WHERE runnable = 1 AND lease_owner IS NULL LIMIT 1") is None:
            return []  # a read first: woken claimers must not queue for the write lock for nothing
        now = time.time()
        async with self.engine.transaction():
            picked = await self.quotas.pick(limit)  # fair across quota nodes, within running limits
            if not picked:
                return []
            rows = await self.engine.all(
                "UPDATE flows SET lease_owner = ?, lease_expires = ?, lease_epoch = lease_epoch + 1, runnable = 0, "
                f"status = 'running', updated = ? WHERE id IN ({','.join('?' * len(picked))}) AND runnable = 1 "
                "AND lease_owner IS NULL RETURNING *",
                worker, now + LEASE_SECONDS, now, *picked,
            )
            if not rows:
                return []
            caps = await self.quotas.worker_caps({row["quota"] for row in rows})
            journals: dict[str, list[JournalEntry]] = {row["id"]: [] for row in rows}
            marks = ",".join("?" * len(rows))
            for entry in await self.engine.all(
                f"SELECT * FROM journal WHERE flow_id IN ({marks}) ORDER BY flow_id, seq", *journals
            ):
                journals[entry["flow_id"]].append(journal_entry(entry))
            tasks = []
            order = {flow_id: n for n, flow_id in enumerate(picked)}
            for row in sorted(rows, key=lambda r: order[r["id"]]):
                entries = journals[row["id"]]
                self.engine.event(row["id"], row["root"], "flow",
                                  {"status": "running", "worker": worker, "replay": len(entries), "name": row["name"]})
                tasks.append(worker_task(row, entries, caps[row["quota"]]))
            return tasks

    async def lease_child(self, child_id: str, worker: str) -> WorkerTask | None:
        """Inside the transaction of the ``run`` that started it: lease a new child flow to its
        parent's worker at once, which then evaluates it with the bundle it already loaded, with no
        claim round trip and no other worker woken for it. Not while any quota node has a running
        limit: then the fair claim order (``Quotas.pick``) decides who runs next."""
        if await self.engine.one("SELECT 1 FROM quota_nodes WHERE running IS NOT NULL LIMIT 1") is not None:
            return None
        now = time.time()
        rows = await self.engine.all(
            "UPDATE flows SET lease_owner = ?, lease_expires = ?, lease_epoch = lease_epoch + 1, runnable = 0, "
            "status = 'running', updated = ? WHERE id = ? AND runnable = 1 AND lease_owner IS NULL RETURNING *",
            worker, now + LEASE_SECONDS, now, child_id,
        )
        if not rows:
            return None
        row = rows[0]
        caps = await self.quotas.worker_caps({row["quota"]})
        self.engine.event(row["id"], row["root"], "flow",
                          {"status": "running", "worker": worker, "replay": 0, "name": row["name"]})
        return worker_task(row, [], caps[row["quota"]])

    async def suspend(self, flow_id: str, worker: str, epoch: int) -> None:
        """Release a flow that waits on a slow action; it becomes runnable again when a result lands."""
        async with self.engine.transaction():
            flow = check_held(await self.engine.one(f"SELECT * FROM flows WHERE id = ?{self.engine.dialect.lock()}", flow_id),
                              flow_id, worker, epoch)
            open_rows = await self.engine.all("SELECT seq FROM journal WHERE flow_id = ? AND result IS NULL", flow_id)
            runnable = 0 if open_rows else 1
            await self.engine.execute(
                "UPDATE flows SET status = ?, lease_owner = NULL, lease_expires = NULL, runnable = ?, updated = ? "
                "WHERE id = ?",
                "waiting" if open_rows else "pending", runnable, time.time(), flow_id,
            )
            self.engine.event(flow_id, flow["root"], "flow", {"status": "waiting", "name": flow["name"]})
            if runnable:
                self.engine.note("runnable")
            self.quotas.room_freed()

    async def heartbeat(self, worker: str, flow_ids: list[str]) -> list[str]:
        """Extend the leases of the flows the worker holds in memory, and only those (a flow it
        dropped must expire and move on); returns the ones it must stop (cancelled or lost)."""
        if not flow_ids:
            return []
        held = {r["id"] for r in await self.engine.write_statement(
            f"UPDATE flows SET lease_expires = ? WHERE lease_owner = ? AND id IN ({','.join('?' * len(flow_ids))}) "
            "RETURNING id",
            (time.time() + LEASE_SECONDS, worker, *flow_ids), notes=set(),
        )}
        return [fid for fid in flow_ids if fid not in held]

    async def release_worker(self, worker: str, reason: str, died: str | None = None) -> int:
        """A worker is gone: its flows become runnable at once (another worker replays them).

        ``died`` describes how it died (a signal, out of memory) when it did not exit cleanly: each
        flow it was evaluating (not one blocked waiting for a result) counts a death, and one that
        reaches MAX_WORKER_DEATHS at the same journal position fails instead of killing another."""
        async with self.engine.transaction():
            rows = await self.engine.all(
                "SELECT f.*, j.seq AS last_seq, j.seq IS NOT NULL AND j.result IS NULL AS blocked FROM flows f "
                "LEFT JOIN journal j ON j.flow_id = f.id AND j.seq = (SELECT MAX(seq) FROM journal WHERE flow_id = f.id) "
                f"WHERE f.lease_owner = ?{self.engine.dialect.lock('f')}", worker,
            )
            for row in rows:
                if died is not None and not row["blocked"]:
                    at = row["last_seq"] or 0
                    deaths = row["worker_deaths"] + 1 if row["deaths_at_seq"] == at else 1
                    if deaths >= MAX_WORKER_DEATHS:
                        await self.flows.end(row, "failed", error={
                            "message": f"the worker evaluating this flow died {deaths} times: last exit: {died}",
                            "traceback": "", "kind": "WorkerDiedError"})
                        continue
                    await self.engine.execute("UPDATE flows SET worker_deaths = ?, deaths_at_seq = ? WHERE id = ?",
                                              deaths, at, row["id"])
                await self.engine.execute(
                    "UPDATE flows SET lease_owner = NULL, lease_expires = NULL, runnable = 1, status = 'pending', "
                    "updated = ? WHERE id = ?",
                    time.time(), row["id"],
                )
                self.engine.event(row["id"], row["root"], "flow",
                                  {"status": "pending", "name": row["name"], "lease_lost": worker,
                                   "reason": f"{reason}: {died}" if died else reason})
                self.engine.note("runnable")
            return len(rows)

    # -- requests leased to connectors ----------------------------------------------------------

    async def claim_requests(self, kinds: list[str], executor: str, limit: int) -> list[dict[str, Any]]:
        """Lease open requests of these kinds to a connector, each for its timeout plus a grace period."""
        now = time.time()
        marks = ",".join("?" * len(kinds))
        if await self.engine.one(
            f"SELECT 1 FROM journal WHERE kind IN ({marks}) AND result IS NULL AND executor IS NULL LIMIT 1", *kinds
        ) is None:
            return []
        async with self.engine.transaction():
            rows = await self.engine.all(
                f"SELECT flow_id, seq, kind, args FROM journal WHERE kind IN ({marks}) AND result IS NULL "
                f"AND executor IS NULL ORDER BY requested_at LIMIT ?{self.engine.dialect.skip_locked}",
                *kinds, limit,
            )
            claimed = []
            for row in rows:
                args = loads(row["args"])
                expires = now + float(args.get("timeout") or 30) + EXECUTOR_GRACE
                await self.engine.execute(
                    "UPDATE journal SET executor = ?, executor_expires = ? WHERE flow_id = ? AND seq = ?",
                    executor, expires, row["flow_id"], row["seq"],
                )
                claimed.append({"flow_id": row["flow_id"], "seq": row["seq"], "kind": row["kind"], "args": args})
            return claimed

    async def record_result(self, flow_id: str, seq: int, result: dict[str, Any], executor: str | None = None) -> bool:
        """A connector's answer. Refused (False) when already answered or no longer held by ``executor``."""
        async with self.engine.transaction():
            row = await self.engine.one(f"SELECT result, executor FROM journal WHERE flow_id = ? AND seq = ?{self.engine.dialect.lock()}",
                                        flow_id, seq)
            if row is None or row["result"] is not None:
                return False
            if executor is not None and row["executor"] != executor:
                return False
            return await record_once(self.engine, flow_id, seq, result)

    async def release_unheld_requests(self, executor: str, holding: list[tuple[str, int]]) -> int:
        """A connector claims again, holding only ``holding``: any other request leased to it was lost
        with a claim's answer (it never reached the connector, so it was never performed) and is
        handed back to be claimed again."""
        keys = [f"{flow_id}/{seq}" for flow_id, seq in holding]
        kept = f" AND flow_id || '/' || seq NOT IN ({','.join('?' * len(keys))})" if keys else ""
        rows = await self.engine.write_statement(
            f"UPDATE journal SET executor = NULL, executor_expires = NULL WHERE executor = ? AND result IS NULL{kept} "
            "RETURNING kind",
            (executor, *keys), notes={("requests", kind) for kind in jr.CONNECTOR_KINDS},
        )
        return len(rows)

    async def release_executor(self, executor: str) -> int:
        """A connector is gone: every request it held without a result is declared failed (interrupted)."""
        rows = await self.engine.all(
            "SELECT flow_id, seq FROM journal WHERE executor = ? AND result IS NULL", executor
        )
        for row in rows:
            await self.record_result(row["flow_id"], row["seq"], jr.err(jr.INTERRUPTED))
        return len(rows)

    # -- both -----------------------------------------------------------------------------------

    async def release_previous_grid(self) -> tuple[int, int]:
        """A grid is starting, and nothing of the previous one survived it: every flow it leased is
        runnable again and every request it had in flight is declared interrupted, now rather than
        when their leases expire. Returns (flows released, requests interrupted)."""
        flows = 0
        for row in await self.engine.all("SELECT DISTINCT lease_owner FROM flows WHERE lease_owner IS NOT NULL"):
            flows += await self.release_worker(row["lease_owner"], "the grid restarted")
        requests = 0
        for row in await self.engine.all(
            "SELECT DISTINCT executor FROM journal WHERE executor IS NOT NULL AND result IS NULL"
        ):
            requests += await self.release_executor(row["executor"])
        return flows, requests

    async def reap(self) -> None:
        """Expire leases: flows of silent workers become runnable, requests of silent connectors fail."""
        now = time.time()
        for row in await self.engine.all(
            "SELECT DISTINCT lease_owner FROM flows WHERE lease_owner IS NOT NULL AND lease_expires < ?", now
        ):
            await self.release_worker(row["lease_owner"], "lease expired")
        for row in await self.engine.all(
            "SELECT flow_id, seq FROM journal WHERE result IS NULL AND executor IS NOT NULL AND executor_expires < ?",
            now,
        ):
            await self.record_result(row["flow_id"], row["seq"], jr.err(jr.INTERRUPTED))

    async def holdings(self, quota: str = "/") -> dict[str, dict[str, list[Any]]]:
        """What each worker and connector holds now: leased flows, and requests in flight (of the flows
        in the subtree at ``quota``)."""
        held: dict[str, dict[str, list[Any]]] = {}
        mine = qt.subtree_sql("f.quota")
        for row in await self.engine.all(
            f"SELECT id, lease_owner FROM flows f WHERE lease_owner IS NOT NULL AND {mine}", *qt.subtree_params(quota)
        ):
            held.setdefault(row["lease_owner"], {"flows": [], "requests": []})["flows"].append(row["id"])
        for row in await self.engine.all(
            "SELECT j.flow_id, j.seq, j.kind, j.executor FROM journal j JOIN flows f ON f.id = j.flow_id "
            f"WHERE j.executor IS NOT NULL AND j.result IS NULL AND {mine}", *qt.subtree_params(quota)
        ):
            held.setdefault(row["executor"], {"flows": [], "requests": []})["requests"].append(
                {"flow_id": row["flow_id"], "seq": row["seq"], "kind": row["kind"]}
            )
        return held
