"""The worker process: claim flows from the Worker API, evaluate them in threads, report outcomes.

Workers are stateless: everything they know comes from the Worker API, and a worker that dies
costs only a replay elsewhere. Each flow evaluates in its own thread; a heartbeat thread renews
the worker's leases and stops flows that were cancelled or lost.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from grid_local.api.wire import WireClient, WireError
from grid_local.bundle_format import read_bundle
from grid_local.errors import LeaseLostError
from grid_local.runtime.execution import (
    Completed,
    Failed,
    FlowExecution,
    FlowTask,
    Limits,
    Suspended,
)
from grid_local.runtime.journal import JournalEntry
from grid_local.runtime.sources import MappingSource

HEARTBEAT_SECONDS = 2.0
CRASH_ENV = "FLOWMETAL_TEST_CRASH_AFTER_APPENDS"


def capped(limits: Limits, caps: dict[str, Any]) -> Limits:
    """A bundle's [limits] within its quota tree's caps (``eval_budget``, from the claim)."""
    budget = caps.get("eval_budget")
    if budget is None or budget >= limits.eval_budget:
        return limits
    return dataclasses.replace(limits, eval_budget=float(budget))


class WorkerApiPort:
    """The JournalPort over HTTP: every journal write of this worker goes through here."""

    def __init__(self, client: WireClient, worker_id: str, crash_after: int | None = None) -> None:
        self.client = client
        self.worker_id = worker_id
        self.crash_after = crash_after
        self.appends = 0
        self._lock = threading.Lock()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.client.post(path, body)
        except WireError as exc:
            if exc.status == 409:
                raise LeaseLostError(str(exc)) from None
            raise

    def append(self, task: FlowTask, entry: JournalEntry) -> dict[str, Any] | None:
        body = {
            "worker": self.worker_id, "epoch": int(task.lease.rsplit(":", 1)[1]),
            "entry": {"seq": entry.seq, "kind": entry.kind, "args": entry.args, "hash": entry.hash,
                      "callsite": entry.callsite, "result": entry.result, "requested_at": entry.requested_at},
        }
        answer = self._post(f"/v1/flows/{task.flow_id}/journal", body)["result"]
        self._count_write()
        return answer

    def _count_write(self) -> None:
        """Failure injection for crash tests: die by SIGKILL right after the N-th journal write."""
        if self.crash_after is None:
            return
        with self._lock:
            self.appends += 1
            if self.appends >= self.crash_after:
                os.kill(os.getpid(), signal.SIGKILL)

    def wait_result(self, task: FlowTask, seq: int, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            data = self.client.get(f"/v1/flows/{task.flow_id}/journal/{seq}", params={"wait": f"{max(remaining, 0):.3f}"})
            if data["result"] is not None:
                return data["result"]
            if data["status"] in ("cancelled", "failed", "completed"):
                raise LeaseLostError(data["status"])
            if remaining <= 0:
                return None

    def finish(self, task: FlowTask, status: str, result: Any = None, error: dict[str, Any] | None = None) -> None:
        self._post(f"/v1/flows/{task.flow_id}/finish", {
            "worker": self.worker_id, "epoch": int(task.lease.rsplit(":", 1)[1]),
            "status": status, "result": result, "error": error,
        })
        self._count_write()

    def suspend(self, task: FlowTask) -> None:
        self._post(f"/v1/flows/{task.flow_id}/suspend", {
            "worker": self.worker_id, "epoch": int(task.lease.rsplit(":", 1)[1]),
        })


class Worker:
    def __init__(self, api_url: str, worker_id: str, max_flows: int = 64) -> None:
        self.worker_id = worker_id
        self.max_flows = max_flows
        self.client = WireClient(api_url)
        crash = os.environ.get(CRASH_ENV)
        self.port = WorkerApiPort(self.client, worker_id, int(crash) if crash else None)
        self.pool = ThreadPoolExecutor(max_workers=max_flows, thread_name_prefix="flow")
        self.running: dict[str, FlowExecution] = {}
        self._lock = threading.Lock()
        self._bundles: dict[str, tuple[MappingSource, Limits]] = {}
        self._stopping = threading.Event()

    def serve(self) -> None:
        threading.Thread(target=self._heartbeat, daemon=True, name="heartbeat").start()
        while not self._stopping.is_set():
            with self._lock:
                free = self.max_flows - len(self.running)
            if free <= 0:
                time.sleep(0.01)
                continue
            try:
                claimed = self.client.post("/v1/workers/claim", {"worker": self.worker_id, "limit": free, "wait": 10})
            except WireError as exc:
                if exc.status == 409:  # the grid declared this incarnation gone: make way for a new one
                    os._exit(3)
                time.sleep(0.2)
                continue
            for task in claimed["tasks"]:
                self.pool.submit(self._execute, task)

    def stop(self) -> None:
        self._stopping.set()

    def _heartbeat(self) -> None:
        while not self._stopping.wait(HEARTBEAT_SECONDS):
            with self._lock:
                held = list(self.running)
            try:
                stop = self.client.post(f"/v1/workers/{self.worker_id}/heartbeat", {"flows": held}).get("stop", [])
            except WireError:
                continue
            with self._lock:
                for flow_id in stop:
                    if flow_id in self.running:
                        self.running[flow_id].cancel("cancelled")

    def _sources(self, digest: str) -> tuple[MappingSource, Limits]:
        if digest not in self._bundles:
            bundle = read_bundle(self.client.get_bytes(f"/v1/bundles/{digest}"), digest)
            self._bundles[digest] = (MappingSource(bundle.files), Limits.from_settings(bundle.settings))
        return self._bundles[digest]

    def _execute(self, data: dict[str, Any]) -> None:
        task = FlowTask(
            flow_id=data["id"], entry=data["entry"], args=data["args"] or {},
            quota={"username": data["username"], "path": data["quota"]},
            journal=[JournalEntry.from_json(e) for e in data["journal"]],
            lease=data["lease"], name=data["flow"],
        )
        try:
            tree, limits = self._sources(data["bundle"])
            limits = capped(limits, data.get("caps") or {})
            execution = FlowExecution(task, tree, self.port, limits)
            with self._lock:
                self.running[task.flow_id] = execution
            outcome = execution.run()
            if isinstance(outcome, Completed):
                self.port.finish(task, "completed", result=outcome.value)
            elif isinstance(outcome, Failed):
                if outcome.kind in ("FlowCancelled", "LeaseLostError"):
                    return  # the grid already knows: cancelled or handed to another worker
                self.port.finish(task, "failed", error={"message": outcome.message, "traceback": outcome.traceback,
                                                        "kind": outcome.kind})
            elif isinstance(outcome, Suspended):
                self.port.suspend(task)
        except LeaseLostError:
            pass
        except Exception as exc:  # the flow is released by lease expiry; say why in the worker log
            print(f"worker {self.worker_id}: flow {task.flow_id}: {exc!r}", file=sys.stderr, flush=True)
        finally:
            with self._lock:
                self.running.pop(task.flow_id, None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="flowmetal-worker", description="A Flowmetal worker process.")
    parser.add_argument("--api", required=True, help="Worker API base URL")
    parser.add_argument("--name", default="worker")
    parser.add_argument("--max-flows", type=int, default=64)
    options = parser.parse_args(argv)
    worker = Worker(options.api, f"{options.name}.{os.getpid()}", options.max_flows)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    worker.serve()


if __name__ == "__main__":
    main()
