"""A grid in this process over a real Flow DB: no subprocesses, no HTTP.

It does what a worker does (claim, evaluate with FlowExecution in a thread, finish or suspend)
and what the clock connector does (fire deadlines that passed), straight on a FlowStore, so the
store suite and the parity test see the Flow DB's own answers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from grid_local.db.store import FINISHED, FlowStore
from grid_local.runtime.execution import Completed, Failed, FlowExecution, FlowTask, Suspended
from grid_local.runtime.limits import Limits
from grid_local.runtime.journal import JournalEntry
from grid_local.runtime.memory import QUOTA
from grid_local.runtime.sources import SourceTree

WORKER = "inprocess.1"


class StorePort:
    """The JournalPort straight onto a FlowStore running on ``loop`` (evaluations run in threads)."""

    def __init__(self, store: FlowStore, loop: asyncio.AbstractEventLoop, epochs: dict[str, int]) -> None:
        self.store = store
        self.loop = loop
        self.epochs = epochs

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def append(self, task: FlowTask, entry: JournalEntry) -> dict[str, Any] | None:
        return self._call(self.store.append(task.flow_id, WORKER, self.epochs[task.flow_id], entry)).result

    def wait_result(self, task: FlowTask, seq: int, timeout: float) -> dict[str, Any] | None:
        result, _status = self._call(self.store.result_of(task.flow_id, seq))
        return result  # never waits: an unanswered request suspends the flow at once


class InProcessGrid:
    def __init__(self, store: FlowStore, tree: SourceTree, limits: Limits | None = None) -> None:
        self.store = store
        self.tree = tree
        self.limits = limits or Limits()
        self.epochs: dict[str, int] = {}

    async def run(self, module: str, args: dict[str, Any] | None = None, rounds: int = 200) -> str:
        """Start a root flow at ``module`` and drive it and its children until it ends; its id."""
        digest = f"inprocess-{module}"
        await self.store.put_bundle(digest, b"", module)
        flow_id = (await self.store.start_flow(digest, args or {}, QUOTA["path"], QUOTA["username"]))["id"]
        for _ in range(rounds):
            tasks = await self.store.claim(WORKER, 16)
            for task in tasks:
                await self.execute(task)
            if (await self.store.get_flow(flow_id))["status"] in FINISHED:
                return flow_id
            if not tasks:
                for due in await self.store.open_deadlines():
                    if due["deadline"] <= time.time():
                        await self.store.fire_deadline(due["flow_id"], due["seq"])
                await asyncio.sleep(0.01)
        raise AssertionError(f"flow {flow_id} did not end in {rounds} rounds")

    async def execute(self, data: dict[str, Any]) -> None:
        """Evaluate one claimed task and report its outcome, as a worker does."""
        self.epochs[data["id"]] = data["epoch"]
        task = FlowTask(
            flow_id=data["id"], entry=data["entry"], args=data["args"] or {},
            quota=dict(QUOTA),
            journal=[JournalEntry.from_json(e) for e in data["journal"]], epoch=data["epoch"], name=data["flow"],
        )
        port = StorePort(self.store, asyncio.get_running_loop(), self.epochs)
        outcome = await asyncio.to_thread(FlowExecution(task, self.tree, port, self.limits).run)
        if isinstance(outcome, Completed):
            await self.store.finish(task.flow_id, WORKER, data["epoch"], "completed", result=outcome.value)
        elif isinstance(outcome, Failed):
            await self.store.finish(task.flow_id, WORKER, data["epoch"], "failed",
                                    error={"message": outcome.message, "traceback": outcome.traceback,
                                           "kind": outcome.kind})
        elif isinstance(outcome, Suspended):
            await self.store.suspend(task.flow_id, WORKER, data["epoch"])

    async def flows_in_order(self, root: str) -> list[dict[str, Any]]:
        """The root and its descendants, oldest first."""
        return sorted(await self.store.list_flows(root=root), key=lambda f: f["created"])
