"""Journal entries: conditional appends, the answers given in the append's transaction, timers.

An append is conditional on the writer's lease at its epoch and on the entry being exactly the next
sequence number (invariant 2). ``run`` and ``send`` are answered in the same transaction
(invariant 4), as are a ``wait`` whose children all ended and a ``receive`` with a message waiting.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from grid_local import quota_tree as qt
from grid_local.db.authority import refusal
from grid_local.db.clock import GridClock
from grid_local.db.engine import Row, Engine, dumps, loads
from grid_local.db.flows import Flows
from grid_local.db.inboxes import Inboxes
from grid_local.db.leases import Leases, check_held
from grid_local.db.results import record_once
from grid_local.db.rows import journal_entry
from grid_local.errors import LeaseLostError, NotFoundError
from grid_local.records import WorkerTask
from grid_local.runtime import journal as jr
from grid_local.runtime import rules
from grid_local.runtime.journal import JournalEntry


class Appended(NamedTuple):
    result: dict[str, Any] | None
    """The entry's result when it was answered in the append's transaction."""
    delay: float
    """Seconds a 'delay' failure injection holds the answer back."""
    task: WorkerTask | None = None
    """A ``run``'s child, leased to the appending worker in the same transaction (``take_child``)."""


def entry_bytes(entry: JournalEntry) -> int:
    """What an entry adds to its journal's size (as the journal_bytes triggers count it)."""
    size = len(dumps(entry.args).encode())
    return size if entry.result is None else size + len(dumps(entry.result).encode())


def journal_over_cap(flow: Row, entry: JournalEntry) -> str | None:
    """The journal limit this entry would pass (``journal_entries`` or ``journal_bytes``), if any."""
    if flow["journal_cap"] is not None and entry.seq > flow["journal_cap"]:
        return "journal_entries"
    if flow["bytes_cap"] is not None and flow["journal_bytes"] + entry_bytes(entry) > flow["bytes_cap"]:
        return "journal_bytes"
    return None


class Entries:
    def __init__(self, engine: Engine, flows: Flows, inboxes: Inboxes, clock: GridClock, leases: Leases) -> None:
        self.engine = engine
        self.leases = leases
        self.clock = clock
        self.flows = flows
        self.inboxes = inboxes

    async def get_journal(self, flow_id: str) -> list[JournalEntry]:
        rows = await self.engine.all("SELECT * FROM journal WHERE flow_id = ? ORDER BY seq", flow_id)
        return [journal_entry(r) for r in rows]

    async def append(self, flow_id: str, worker: str, epoch: int, entry: JournalEntry,
                     take_child: bool = False) -> Appended:
        """Commit a request (and its result when it has one), with any result answered in the same
        transaction. ``take_child``: the worker has a free slot for the child a ``run`` starts."""
        now = await self.clock.now()
        if self.clock.virtual:  # the journal records the grid's (virtual) time, and now() answers it
            entry.requested_at = now
            if entry.kind == "now":
                entry.result = jr.ok(now)
        if entry.result is not None:
            # Fast path for actions answered by the worker (now, random, uuid, print): one conditional
            # INSERT, its own transaction, checks the lease, the sequence number and that no failure
            # injection is pending; the journal triggers write its events in the same statement.
            inserted = await self.engine.write_statement(
                "INSERT INTO journal (flow_id, seq, kind, args, hash, callsite, result, requested_at, "
                "answered_at, worker) SELECT f.id, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM flows f WHERE f.id = ? "
                "AND f.lease_owner = ? AND f.lease_epoch = ? AND f.status != 'cancelled' "
                "AND COALESCE((SELECT MAX(seq) FROM journal WHERE flow_id = f.id), 0) + 1 = ? "
                "AND NOT EXISTS (SELECT 1 FROM injections WHERE flow_id = f.id AND used_seq IS NULL) "
                "AND (f.journal_cap IS NULL OR ? <= f.journal_cap) "
                f"AND (f.bytes_cap IS NULL OR f.journal_bytes + ? <= f.bytes_cap){self.engine.dialect.lock('f')} RETURNING seq",
                (entry.seq, entry.kind, dumps(entry.args), entry.hash, entry.callsite, dumps(entry.result),
                 entry.requested_at or now, now, worker, flow_id, worker, epoch, entry.seq, entry.seq,
                 entry_bytes(entry)),
                notes={("result", flow_id, entry.seq)},
            )
            if inserted:
                return Appended(entry.result, 0.0)
            # Otherwise the full path below says why it is refused, or applies the injection.
        async with self.engine.transaction():
            # One statement for the lease, the expected sequence number and a pending failure injection.
            flow = check_held(await self.engine.one(
                "SELECT f.*, (SELECT MAX(seq) FROM journal WHERE flow_id = f.id) AS last_seq, "
                "i.id AS injection_id, i.action AS injection, i.seconds AS injection_seconds "
                "FROM flows f LEFT JOIN injections i ON i.id = (SELECT id FROM injections "
                f"WHERE flow_id = f.id AND used_seq IS NULL ORDER BY id LIMIT 1) WHERE f.id = ?{self.engine.dialect.lock('f')}",
                flow_id,
            ), flow_id, worker, epoch)
            expected = (flow["last_seq"] or 0) + 1
            if entry.seq < expected:  # a retry of an append whose answer was lost (the API restarted)
                again = await self.engine.one("SELECT * FROM journal WHERE flow_id = ? AND seq = ?", flow_id, entry.seq)
                if again is not None and again["hash"] == entry.hash and again["worker"] == worker:
                    return Appended(loads(again["result"]), 0.0)
            if entry.seq != expected:
                raise LeaseLostError(f"journal of {flow_id} is at {expected - 1}; refusing entry {entry.seq}")
            over = journal_over_cap(flow, entry)
            if over is None:
                return await self._append_held(flow, entry, worker, now, take_child)
            message = await self._cap_message(flow, over)
            await self.flows.end(flow, "failed", error={"message": message, "traceback": "", "kind": "QuotaError"})
        raise LeaseLostError(message)

    async def _append_held(self, flow: Row, entry: JournalEntry, worker: str, now: float,
                           take_child: bool = False) -> Appended:
        """The full append, inside the transaction that checked the lease and the sequence number."""
        flow_id = flow["id"]
        result = entry.result
        deadline = None
        delay = 0.0
        if flow["injection_id"] is not None and entry.kind != "print":
            await self.engine.execute("UPDATE injections SET used_seq = ? WHERE id = ?", entry.seq, flow["injection_id"])
            if flow["injection"] == "delay":
                delay = float(flow["injection_seconds"])
            else:
                result = rules.injected_failure(entry.kind)
        if result is None:  # a request outside the flow's authority fails here, touching nothing
            result = await refusal(self.engine, flow, entry.kind, entry.args)
        if result is None and entry.kind == "open":  # the subtree's open resources at a node's limit
            over = await self.flows.quotas.open_refusal(flow["quota"])
            if over is not None:
                result = jr.err(over.message)
        if result is None:
            deadline = rules.deadline(entry.kind, entry.args, now)
        await self.engine.execute(
            "INSERT INTO journal (flow_id, seq, kind, args, hash, callsite, result, requested_at, answered_at, "
            "worker, deadline) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            flow_id, entry.seq, entry.kind, dumps(entry.args), entry.hash, entry.callsite,
            None if result is None else dumps(result), entry.requested_at or now,
            None if result is None else now, worker, deadline,
        )
        if result is not None:
            self.engine.note("result", flow_id, entry.seq)
            return Appended(result, delay)
        task = None
        if entry.kind == "run":
            result = await self.flows.start_child(flow, entry.args)
            if take_child and result["ok"]:
                task = await self.leases.lease_child(rules.started_id(result), worker)
        elif entry.kind == "send":
            result = await self.inboxes.send_from_flow(flow, entry.args)
        elif entry.kind == "wait":
            result = await self.flows.wait_result(entry.args, timed_out=False)
        elif entry.kind == "receive":
            result = await self.inboxes.receive_result(flow_id, entry.seq, rules.inbox_of(entry.args))
        elif entry.kind == "sleep" and deadline is not None and deadline <= now:
            result = rules.slept()
        if result is not None:
            await record_once(self.engine, flow_id, entry.seq, result, at=now)
        elif entry.kind in jr.CONNECTOR_KINDS:
            self.engine.note("requests", entry.kind)
        if deadline is not None and result is None:
            self.engine.note("deadlines")
        if entry.kind == "wait" and result is None:
            self.flows.quotas.room_freed()  # a parent waiting on its children no longer counts as running
        return Appended(result, delay, task)

    async def _cap_message(self, flow: Row, limit: str) -> str:
        """Which node's limit the flow's journal reached, in words (journal caps are stamped at start)."""
        nodes = await self.flows.quotas.nodes(qt.ancestry(flow["quota"]))
        found = qt.tightest(nodes, flow["quota"], limit)
        node = found[1] if found else flow["quota"]
        cap = flow["journal_cap"] if limit == "journal_entries" else flow["bytes_cap"]
        return f"the journal reached the limit of quota {node}: {cap} {qt.LIMITS[limit]}"

    async def result_of(self, flow_id: str, seq: int) -> tuple[dict[str, Any] | None, str]:
        """An entry's result (or None) and the flow's status, as committed (invariant 8)."""
        row = await self.engine.one_committed(
            "SELECT j.result, f.status FROM journal j JOIN flows f ON f.id = j.flow_id "
            "WHERE j.flow_id = ? AND j.seq = ?",
            flow_id, seq,
        )
        if row is None:
            raise NotFoundError(f"no journal entry {flow_id}/{seq}")
        return loads(row["result"]), row["status"]

    # -- timers ---------------------------------------------------------------------------------

    async def open_deadlines(self) -> list[dict[str, Any]]:
        rows = await self.engine.all(
            "SELECT flow_id, seq, kind, deadline FROM journal WHERE result IS NULL AND deadline IS NOT NULL "
            "ORDER BY deadline"
        )
        return [dict(r) for r in rows]

    async def fire_deadline(self, flow_id: str, seq: int) -> bool:
        """A timer reached its deadline: a sleep ends, a receive or wait times out."""
        async with self.engine.transaction():
            row = await self.engine.one(f"SELECT * FROM journal WHERE flow_id = ? AND seq = ?{self.engine.dialect.lock()}", flow_id, seq)
            if row is None or row["result"] is not None or row["deadline"] is None:
                return False
            now = await self.clock.now()
            if row["deadline"] > now + 0.001:
                return False
            args = loads(row["args"])
            children = await self.flows.children(rules.waited_ids(args)) if row["kind"] == "wait" else {}
            return await record_once(self.engine, flow_id, seq, rules.at_deadline(row["kind"], args, children), at=now)
