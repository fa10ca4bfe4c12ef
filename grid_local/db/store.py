"""The Flow DB facade: one object per process that the APIs and connectors call.

It only wires the parts together; each query lives with its concern:

  engine.py    the engine on SQLite: the connection, transactions, busy retries, migrations, commit notes
  postgres.py  the engine on PostgreSQL: a pool, transactions, retries, LISTEN/NOTIFY (same interface)
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
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from grid_local.db.bundles import Bundles
from grid_local.db.clock import GridClock
from grid_local.db.engine import BUSY_SECONDS, Engine, Note, SqliteEngine
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

T = TypeVar("T")


class _Retried:
    """A part of the store whose coroutine methods are each wrapped in ``engine.retried``."""

    def __init__(self, part: Any, engine: Engine) -> None:
        self._part = part
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._part, name)
        if inspect.iscoroutinefunction(found):
            return self._engine.retried(found)
        return found


def _retried(part: T, engine: Engine) -> T:
    return part if engine.retried(_retried) is _retried else cast(T, _Retried(part, engine))


class FlowStore:
    """One process's connection to the Flow DB, and every query the grid asks of it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.target = engine.target  # the file, or the PostgreSQL URL (without its password)
        bundles = Bundles(engine)
        quotas = Quotas(engine)
        secrets = Secrets(engine)
        flows = Flows(engine, quotas, secrets)
        inboxes = Inboxes(engine)
        clock = GridClock(engine)
        leases = Leases(engine, quotas, flows)
        entries = Entries(engine, flows, inboxes, clock, leases)
        events = Events(engine)
        self.secrets = _retried(secrets, engine)  # sealed values; granting them to flows
        self.clock = _retried(clock, engine)  # real, or virtual (db/clock.py)
        self.triggers = _retried(TriggerStore(engine, inboxes, flows, clock), engine)  # webhooks and schedules
        self.quotas = _retried(quotas, engine)  # the quota tree (nodes, limits, usage)
        reasons = Reasons(engine, quotas)
        self.why = reasons.why
        self.reasons = reasons.reasons  # of many flows at once (a flow list's ?why=true)
        self.cancel_subtree = engine.retried(functools.partial(cancel_subtree, engine, flows.end))

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

        # On PostgreSQL a call whose transaction hit a deadlock or a serialization failure runs again.
        for name, value in list(vars(self).items()):
            if inspect.iscoroutinefunction(value):
                setattr(self, name, engine.retried(value))

    @classmethod
    async def open(cls, target: str | Path, busy_seconds: float = BUSY_SECONDS) -> "FlowStore":
        """The Flow DB at ``target``: a ``postgresql://`` URL, or the path of an SQLite file."""
        engine: Engine
        if isinstance(target, str) and target.startswith(("postgresql://", "postgres://")):
            from grid_local.db.postgres import PostgresEngine  # (asyncpg is imported only when used)

            engine = await PostgresEngine.open(target, busy_seconds)
        else:
            engine = await SqliteEngine.open(Path(target), busy_seconds)
        store = cls(engine)
        try:
            await store.clock.load()
        except BaseException:
            await engine.close()
            raise
        return store

    async def close(self) -> None:
        await self.engine.close()

    @property
    def on_commit(self) -> list[Callable[[set[Note]], None]]:
        """Callables run with the notes of each commit this process makes (for wake-ups)."""
        return self.engine.on_commit

