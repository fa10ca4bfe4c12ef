"""The worker's JournalPort over the Worker API: every journal write and wait of its flows goes here.

A call the API cannot answer now (it is restarting, or the Flow DB is busy or its disk full) is
retried until it can: the flow's evaluation waits in memory and goes on. A refusal is final: 409
means the lease is lost (another worker has the flow, or it was cancelled).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from grid_local.api.wire import WireClient, WireError, until_answered
from grid_local.errors import LeaseLostError
from grid_local.runtime.execution import FlowTask
from grid_local.records import WorkerTask
from grid_local.runtime.journal import JournalEntry
from grid_local.worker.slots import Slots

FINISHED = ("cancelled", "failed", "completed")


class WorkerApiPort:
    def __init__(self, client: WireClient, worker_id: str, slots: Slots, crash_after: int | None = None,
                 take: Callable[[WorkerTask], None] | None = None,
                 before_append: Callable[[FlowTask, JournalEntry], None] | None = None) -> None:
        self.client = client
        self.take = take
        """Where a child flow handed over with its parent's ``run`` goes (it holds a slot already)."""
        self.before_append = before_append
        """Called before each append (a child the flow's last ``run`` handed over starts here)."""
        self.worker_id = worker_id
        self.slots = slots
        self.crash_after = crash_after
        self.appends = 0
        self._lock = threading.Lock()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = until_answered(lambda: self.client.post(path, body), f"worker {self.worker_id}")
            return answer
        except WireError as exc:
            if exc.status == 409:
                raise LeaseLostError(str(exc)) from None
            raise

    def append(self, task: FlowTask, entry: JournalEntry) -> dict[str, Any] | None:
        if self.before_append is not None:
            self.before_append(task, entry)
        body: dict[str, Any] = {"worker": self.worker_id, "epoch": task.epoch, "entry": entry.to_json()}
        # A child flow is cheapest where its parent runs: the bundle is loaded, and no claim round
        # trip or other worker's wake-up stands between the run and the child's evaluation. Ask for
        # it only with a slot reserved for it.
        reserved = entry.kind == "run" and self.take is not None and self.slots.try_take()
        if reserved:
            body["take_child"] = True
        try:
            answer = self._post(f"/v1/flows/{task.flow_id}/journal", body)
        except BaseException:
            if reserved:
                self.slots.give_back()
            raise
        child = answer.get("task")
        if child is not None and self.take is not None:
            self.take(child)
        elif reserved:
            self.slots.give_back()
        self._count_write()
        return answer["result"]  # type: ignore[no-any-return]

    def _count_write(self) -> None:
        """Failure injection for crash tests: die by SIGKILL right after the N-th journal write."""
        if self.crash_after is None:
            return
        with self._lock:
            self.appends += 1
            if self.appends >= self.crash_after:
                os.kill(os.getpid(), signal.SIGKILL)

    def _result(self, task: FlowTask, seq: int, wait: float) -> dict[str, Any]:
        data: dict[str, Any] = until_answered(
            lambda: self.client.get(f"/v1/flows/{task.flow_id}/journal/{seq}", params={"wait": f"{wait:.3f}"}),
            f"worker {self.worker_id}",
        )
        return data

    def wait_result(self, task: FlowTask, seq: int, timeout: float) -> dict[str, Any] | None:
        """Wait for entry ``seq``'s result without holding an evaluation slot; None means suspend."""
        if not self.slots.start_waiting():
            # The worker keeps as many waiting flows as it may: one look, then suspend this one.
            data = self._result(task, seq, 0)
            if data["status"] in FINISHED:
                raise LeaseLostError(data["status"])
            return data["result"]  # type: ignore[no-any-return]
        answer: dict[str, Any] | None = None
        try:
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                data = self._result(task, seq, max(remaining, 0))
                if data["result"] is not None:
                    answer = data["result"]
                    return answer
                if data["status"] in FINISHED:
                    raise LeaseLostError(data["status"])
                if remaining <= 0:
                    return None
        finally:
            self.slots.stop_waiting(evaluate_on=answer is not None)

    def finish(self, task: FlowTask, status: str, result: Any = None, error: dict[str, Any] | None = None) -> None:
        self._post(f"/v1/flows/{task.flow_id}/finish", {
            "worker": self.worker_id, "epoch": task.epoch, "status": status, "result": result, "error": error,
        })
        self._count_write()

    def suspend(self, task: FlowTask) -> None:
        self._post(f"/v1/flows/{task.flow_id}/suspend", {"worker": self.worker_id, "epoch": task.epoch})
