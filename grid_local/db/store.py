"""The Flow DB facade: one object per process that the APIs and connectors call.

It only wires the parts together; each query lives with its concern:

  engine.py    the connection, transactions, busy retries, migrations, commit notes
  bundles.py   bundles and deployments
  flows.py     starting, listing, ending and cancelling flows; the outcome of children
  inboxes.py   messages, their delivery to ``receive``, logs
  entries.py   conditional journal appends, answers in the same transaction, timers
  results.py   recording a result at most once
  leases.py    flows leased to workers, requests leased to connectors, expiry
  events.py    the event log
  triggers.py  webhooks and their deliveries, schedules and their fires
  quotas.py    quota nodes, their limits, admission of starts, the fair claim order, usage
  reasons.py   why a flow is not running now
  clock.py     the time flows see: real, or virtual (jumps to the next deadline when all is idle)
  rows.py      rows turned into the records the APIs answer
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from grid_local.db.bundles import Bundles
from grid_local.db.clock import GridClock
from grid_local.db.engine import BUSY_SECONDS, Note, SqliteEngine
from grid_local.db.entries import Appended, Entries
from grid_local.db.events import Events
from grid_local.db.flows import Flows
from grid_local.db.inboxes import Inboxes
from grid_local.db.leases import EXECUTOR_GRACE, LEASE_SECONDS, Leases
from grid_local.db.quotas import Quotas, cancel_subtree
from grid_local.db.reasons import Reasons
from grid_local.db.secrets import Secrets
from grid_local.db.rows import FINISHED, new_id
from grid_local.db.triggers import TriggerStore

__all__ = ["Appended", "EXECUTOR_GRACE", "FINISHED", "FlowStore", "LEASE_SECONDS", "new_id"]


class FlowStore:
    """One process's connection to the Flow DB, and every query the grid asks of it."""

    def __init__(self, engine: SqliteEngine) -> None:
        self.engine = engine
        self.path = engine.path
        bundles = Bundles(engine)
        quotas = Quotas(engine)
        self.secrets = Secrets(engine)  # sealed values; granting them to flows
        flows = Flows(engine, quotas, self.secrets)
        inboxes = Inboxes(engine)
        self.clock = GridClock(engine)  # real, or virtual (db/clock.py)
        leases = Leases(engine, quotas, flows)
        entries = Entries(engine, flows, inboxes, self.clock, leases)
        events = Events(engine)
        self.triggers = TriggerStore(engine, inboxes, flows, self.clock)  # webhooks and schedules
        self.quotas = quotas  # the quota tree (nodes, limits, usage)
        self.why = Reasons(engine, quotas).why
        self.cancel_subtree = functools.partial(cancel_subtree, engine, flows.end)

        # the Client API
        self.put_bundle = bundles.put_bundle
        self.has_bundle = bundles.has_bundle
        self.get_bundle = bundles.get_bundle
        self.put_deployment = bundles.put_deployment
        self.list_deployments = bundles.list_deployments
        self.get_deployment = bundles.get_deployment
        self.start_flow = flows.start_flow
        self.get_flow = flows.get_flow
        self.list_flows = flows.list_flows
        self.cancel_flow = flows.cancel_flow
        self.add_injection = flows.add_injection
        self.get_journal = entries.get_journal
        self.send_message = inboxes.send_message
        self.events_after = events.events_after
        self.holdings = leases.holdings

        # the Worker API: workers
        self.claim = leases.claim
        self.append = entries.append
        self.result_of = entries.result_of
        self.finish = flows.finish
        self.suspend = leases.suspend
        self.heartbeat = leases.heartbeat
        self.release_worker = leases.release_worker
        self.reap = leases.reap
        self.release_previous_grid = leases.release_previous_grid

        # the Worker API: connectors
        self.claim_requests = leases.claim_requests
        self.record_result = leases.record_result
        self.release_executor = leases.release_executor
        self.release_unheld_requests = leases.release_unheld_requests
        self.open_deadlines = entries.open_deadlines
        self.fire_deadline = entries.fire_deadline
        self.deliver_pending = inboxes.deliver_pending
        self.finished_among = flows.finished_among

    @classmethod
    async def open(cls, path: Path, busy_seconds: float = BUSY_SECONDS) -> "FlowStore":
        store = cls(await SqliteEngine.open(path, busy_seconds))
        await store.clock.load()
        return store

    async def close(self) -> None:
        await self.engine.close()

    @property
    def on_commit(self) -> list[Callable[[set[Note]], None]]:
        """Callables run with the notes of each commit this process makes (for wake-ups)."""
        return self.engine.on_commit

    async def data_version(self) -> int:
        return await self.engine.data_version()
