"""The worker process: claim flows from the Worker API, evaluate them in threads, report outcomes.

Workers are stateless: everything they know comes from the Worker API, and a worker that dies
costs only a replay elsewhere. Each flow evaluates in its own thread; a heartbeat thread renews
the leases of the flows this worker holds in memory (and only those: a flow it dropped expires
and is replayed elsewhere) and stops flows that were cancelled or lost.

Every failure ends one of two ways. Transient (the Worker API unreachable or restarting): the
call is retried until it is back, and the evaluation goes on in memory. Permanent (a bad bundle,
a value over a limit, the evaluator crashing): the flow ends ``failed`` with an error that says so.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from grid_local.api.wire import WireClient, WireError, exit_if_refused, until_answered
from grid_local.bundle_format import read_bundle
from grid_local.errors import BundleError, LeaseLostError
from grid_local.records import WorkerTask
from grid_local.runtime.execution import (
    Completed,
    Failed,
    FlowExecution,
    FlowTask,
    Outcome,
    Suspended,
)
from grid_local.runtime import rules
from grid_local.runtime.journal import JournalEntry
from grid_local.runtime.limits import Limits
from grid_local.runtime.sources import MappingSource
from grid_local.worker.port import WorkerApiPort
from grid_local.worker.settings import WorkerSettings
from grid_local.worker.slots import Slots

HEARTBEAT_SECONDS = 2.0
CRASH_ENV = "FLOWMETAL_TEST_CRASH_AFTER_APPENDS"


QUOTA_CAPS = (("eval_budget", "eval_budget", float), ("memory", "memory_mib", int))
"""The quota tree's caps on a bundle's [limits]: (the claim's key, the limit, its type)."""


def capped(limits: Limits, caps: dict[str, Any]) -> Limits:
    """A bundle's [limits] within its quota tree's caps (``eval_budget``, ``memory``, from the claim);
    a limit held lower remembers the node that holds it, for the error of a flow that reaches it."""
    changes: dict[str, Any] = {}
    by = []
    for key, name, kind in QUOTA_CAPS:
        cap = caps.get(key)
        if cap is not None and cap < getattr(limits, name):
            changes[name] = kind(cap)
            by.append((name, str(caps.get(f"{key}_node") or "?")))
    if not changes:
        return limits
    return dataclasses.replace(limits, **changes, capped_by=tuple(by))


LOST = ("FlowCancelled", "LeaseLostError")  # outcomes the grid already knows: nothing to report


class Worker:
    def __init__(self, api_urls: str | list[str], worker_id: str, settings: WorkerSettings | None = None) -> None:
        self.worker_id = worker_id
        self.settings = settings or WorkerSettings()
        self.client = WireClient(api_urls, who=f"worker {worker_id}")
        self.slots = Slots(self.settings.slots, self.settings.max_waiting)
        crash = os.environ.get(CRASH_ENV)
        self.port = WorkerApiPort(self.client, worker_id, self.slots, int(crash) if crash else None,
                                  take=self._start_child, before_append=self._before_append)
        threading.stack_size(self.settings.stack_bytes)  # deep enough for the grid's max_callstack
        self.pool = ThreadPoolExecutor(max_workers=self.settings.threads, thread_name_prefix="flow")
        self.held: dict[str, FlowExecution | None] = {}
        """The flows this worker holds in memory, from their claim (None until they start) to their end."""
        self._dropped: set[str] = set()
        self._lock = threading.Lock()
        self._bundles: dict[str, tuple[MappingSource, Limits]] = {}
        self._not_started: dict[str, dict[str, WorkerTask]] = {}
        """By parent: children handed over with its ``run``, not started yet (``_start_child``)."""
        self._inline = threading.local()  # .active: this thread evaluates a child inside its parent
        self._stopping = threading.Event()

    def check_in(self) -> None:
        """The first call to the grid, before serving: retried while no Worker API answers, and a
        refused credential ends the process at once (one line, exit 4)."""
        try:
            until_answered(lambda: self.client.post(f"/v1/workers/{self.worker_id}/heartbeat",
                                                    {"flows": [], "slots": self.settings.slots}),
                           f"worker {self.worker_id}")
        except WireError as exc:
            exit_if_refused(exc, f"worker {self.worker_id}")
            raise

    def serve(self) -> None:
        threading.Thread(target=self._heartbeat, daemon=True, name="heartbeat").start()
        while not self._stopping.is_set():
            free = self.slots.free()
            if free <= 0:
                self.slots.wait_until_free(0.5)
                continue
            try:
                claimed = self.client.post("/v1/workers/claim", {"worker": self.worker_id, "limit": free, "wait": 10})
            except WireError as exc:
                exit_if_refused(exc, f"worker {self.worker_id}")
                if exc.status == 409:  # the grid declared this incarnation gone: make way for a new one
                    os._exit(3)
                self._stopping.wait(0.2)
                continue
            for task in claimed["tasks"]:
                self.slots.take()
                self._start(task)

    def _start(self, task: WorkerTask) -> None:
        """Evaluate a flow leased to this worker (its slot already taken)."""
        with self._lock:
            self.held[task["id"]] = None
        self.pool.submit(self._execute, task)

    def _start_child(self, task: WorkerTask) -> None:
        """A child handed over with its parent's ``run``. It waits for its parent's next step: if that
        is a ``wait`` on it alone, the parent's thread evaluates it (``_before_append``); anything
        else, or the parent's end, starts it in a pool thread (``_start_children_of``)."""
        with self._lock:
            self.held[task["id"]] = None
            self._not_started.setdefault(task["parent"] or "", {})[task["id"]] = task

    def _start_children_of(self, parent_id: str) -> None:
        with self._lock:
            children = self._not_started.pop(parent_id, {})
        for child in children.values():
            self.pool.submit(self._execute, child)

    def _before_append(self, task: FlowTask, entry: JournalEntry) -> None:
        """A flow's next step after a ``run`` that handed it a child. A ``wait`` on that child alone
        would only block until it ends: the child is evaluated here, now, in the parent's thread, so
        no thread hand-off, wake-up or long poll stands between them, and the ``wait`` is answered
        in its own append. One level only: a flow thread's stack holds two evaluations
        (``WorkerSettings.stack_bytes``)."""
        waited = rules.waited_ids(entry.args) if entry.kind == "wait" else []
        inline = None
        if len(waited) == 1 and not getattr(self._inline, "active", False):
            with self._lock:
                inline = self._not_started.get(task.flow_id, {}).pop(waited[0], None)
        self._start_children_of(task.flow_id)
        if inline is None:
            return
        self._inline.active = True
        try:
            self._execute(inline)
        finally:
            self._inline.active = False

    def stop(self) -> None:
        self._stopping.set()

    def _heartbeat(self) -> None:
        while not self._stopping.wait(HEARTBEAT_SECONDS):
            with self._lock:
                held = list(self.held)
            try:
                stop = self.client.post(f"/v1/workers/{self.worker_id}/heartbeat",
                                        {"flows": held, "slots": self.settings.slots}).get("stop", [])
            except WireError as exc:
                exit_if_refused(exc, f"worker {self.worker_id}")
                continue
            with self._lock:
                for flow_id in stop:
                    execution = self.held.get(flow_id)
                    if execution is not None:
                        execution.cancel("cancelled")
                    elif flow_id in self.held:
                        self._dropped.add(flow_id)

    def _sources(self, digest: str) -> tuple[MappingSource, Limits]:
        if digest not in self._bundles:
            data = until_answered(lambda: self.client.get_bytes(f"/v1/bundles/{digest}"), f"worker {self.worker_id}")
            bundle = read_bundle(data, digest)
            self._bundles[digest] = (MappingSource(bundle.files),
                                     Limits.from_settings(bundle.settings, self.settings.maxima))
        return self._bundles[digest]

    def _execute(self, data: WorkerTask) -> None:
        task = FlowTask(
            flow_id=data["id"], entry=data["entry"], args=data["args"] or {},
            quota={"username": data["username"], "path": data["quota"]},
            journal=[JournalEntry.from_json(e) for e in data["journal"]],
            epoch=data["epoch"], name=data["flow"],
        )
        try:
            self._report(task, self._evaluate(task, data["bundle"], data.get("caps") or {}))
        except LeaseLostError:
            pass  # cancelled, or handed to another worker: the grid already knows
        except BaseException as exc:  # a failure of this worker's own: the flow fails, saying so
            self._fail(task, f"worker {self.worker_id} could not evaluate this flow: {exc!r}", "", "InternalError")
        finally:
            self._start_children_of(task.flow_id)  # (a parent that ended right after its run)
            with self._lock:
                self.held.pop(task.flow_id, None)
                self._dropped.discard(task.flow_id)
            self.slots.give_back()

    def _evaluate(self, task: FlowTask, digest: str, caps: dict[str, Any]) -> Outcome:
        try:
            tree, limits = self._sources(digest)
        except BundleError as exc:
            return Failed(str(exc), kind="BundleError")
        limits = capped(limits, caps)
        execution = FlowExecution(task, tree, self.port, limits)
        with self._lock:
            if task.flow_id in self._dropped:
                raise LeaseLostError(f"flow {task.flow_id} is no longer leased to {self.worker_id}")
            self.held[task.flow_id] = execution
        return execution.run()

    def _report(self, task: FlowTask, outcome: Outcome) -> None:
        if isinstance(outcome, Completed):
            try:
                self.port.finish(task, "completed", result=outcome.value)
            except WireError as exc:  # refused for good (a 4xx): the flow cannot end this way
                self._fail(task, f"the grid refused the result of flow {task.name}: {exc}", "", "GridError")
        elif isinstance(outcome, Failed):
            if outcome.kind in LOST:
                return
            message = outcome.message
            if outcome.kind == "MemoryError":
                message += f" ({self.settings.memory_mib} MiB per worker: grid up --worker-memory)"
            self._fail(task, message, outcome.traceback, outcome.kind)
        elif isinstance(outcome, Suspended):
            self.port.suspend(task)

    def _fail(self, task: FlowTask, message: str, traceback: str, kind: str) -> None:
        try:
            self.port.finish(task, "failed", error={"message": message, "traceback": traceback, "kind": kind})
        except LeaseLostError:
            pass
        except WireError as exc:  # not even a failure is accepted: say so where operators look
            print(f"worker {self.worker_id}: flow {task.flow_id}: could not record its failure ({message}): {exc}",
                  file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="flowmetal-worker", description="A Flowmetal worker process.")
    parser.add_argument("--api", required=True, help="Worker API base URL, or several: URL,URL2,... (replicas)")
    parser.add_argument("--name", default="worker")
    WorkerSettings.add_arguments(parser)
    options = parser.parse_args(argv)
    worker = Worker(options.api, f"{options.name}.{os.getpid()}", WorkerSettings.from_options(options))

    def leave(*_: object) -> None:
        """Stopped: hand its flows back now (another worker replays them) rather than at lease
        expiry; a fresh client, since the signal may land in the middle of a call."""
        with contextlib.suppress(WireError):
            WireClient(options.api, timeout=2.0, patience=0).post(f"/v1/workers/{worker.worker_id}/gone")
        os._exit(0)

    signal.signal(signal.SIGTERM, leave)
    worker.check_in()
    worker.serve()


if __name__ == "__main__":
    main()
