"""The fault matrix's workload: 30+ root flows of every kind of action, one kill, and the checks.

Each root flow sleeps, calls a child flow (which sleeps and makes an HTTP call), receives a
message the test sends through the Client API, makes an HTTP call of its own, and calls a child
flow holding a workspace resource (an ``exec`` in it); every HTTP call and exec goes through
the flow's own ``retry``, so a request declared interrupted is retried by the flow, never by the
grid. The HTTP calls go to a loopback server that counts what it is sent and answers slowly
enough that a kill finds requests in flight.

``FaultRun`` drives one run: start the workload, wait until the process kind to kill is busy,
SIGKILL it (for the supervisor and for everything at once, start the grid again as a user
would), send the remaining messages, wait, and list every broken promise: a lost flow, a wrong
result, a recorded request performed twice, an interrupted request not declared failed (or
declared late after a restart). Shared by tests/integration/test_fault_matrix.py and
bench/bench_faults.py; it imports no pytest.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flowmetal_cli.bundle import build_bundle
from flowmetal_cli.client import GridClient, GridUnreachable
from grid_local.db.store import FlowStore
from grid_local.home import GridPaths, pid_alive
from grid_local.layout import Layout
from grid_local.runtime.journal import INTERRUPTED
from grid_local.supervisor import start_background
from tests.helpers import LoopbackServer, QuietJsonHandler, write_file

KINDS = (
    "worker", "connector:clock", "connector:http", "connector:inbox", "connector:resources",
    "worker-api", "client-api", "supervisor", "everything",
)
"""What a run kills: every process of that role (both workers for "worker"), the supervisor (its
children die with it), or every process of the grid at the same moment."""
RESTARTS_GRID = ("supervisor", "everything")
HOLDS_REQUESTS = ("connector:http", "connector:resources")
FINISHED = ("completed", "failed", "cancelled")
INTERRUPTED_AFTER_RESTART = 10.0
"""Seconds within which a restarted grid declares the requests left in flight by the old one
interrupted ("seconds, not tens of seconds": an executor lease is 35 s)."""

WORKLOAD = """
load("pkg.flowmetal.io/workspace/v1", "workspace", "exec")

def _get(url):
    return retry(lambda: fctx().actions.http("GET", url, check = False), limit = 5, backoff = 0.2)()

def _square_impl(fctx):
    fctx.actions.sleep(0.2)
    r = _get("{}/square/{}".format(fctx.args.url, fctx.args.n))
    return {"square": fctx.args.n * fctx.args.n, "path": r.json["path"]}

square = flow(implementation = _square_impl)

def _triple_impl(fctx):
    ws = fctx.resources.ws
    # Takes ``nap`` seconds, and longer while the test holds execs (the file ``hold`` exists; 10 s at most).
    command = "sleep {}; i=0; while [ -e {} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; echo $((3 * {}))".format(
        fctx.args.nap, fctx.args.hold, fctx.args.n)
    r = retry(lambda: exec(ws, "sh", "-c", command, check = False), limit = 5, backoff = 0.2)()
    return int(r.stdout.strip())

triple = flow(implementation = _triple_impl, resources = {"ws": lambda fctx: workspace()})

if __name__ == "__flow__":
    a = fctx().actions
    n = fctx().args.n
    url = fctx().args.url
    a.sleep(0.3)
    sq = square(n = n, url = url)
    got = a.receive(timeout = 600)
    r = _get("{}/root/{}".format(url, n))
    tripled = retry(triple, limit = 5, backoff = 0.2)(n = n, nap = fctx().args.nap, hold = fctx().args.hold)
    a.sleep(0.2)
    print(json.encode({"n": n, "square": sq, "got": got, "path": r.json["path"], "tripled": tripled}))
"""


def expected_line(n: int) -> dict[str, Any]:
    return {"n": n, "square": {"square": n * n, "path": f"/square/{n}"}, "got": message(n),
            "path": f"/root/{n}", "tripled": 3 * n}


def message(n: int) -> dict[str, Any]:
    return {"n": n, "word": f"w{n}"}


class SlowCountingServer(LoopbackServer):
    """Counts the requests it is sent per path; answers each after ``delay`` s with its path and count.

    While ``gate`` is clear, requests wait there (10 s at most) before their delay: a kill then finds
    requests certainly in flight (``waiting`` counts them)."""

    def __init__(self, delay: float = 0.5) -> None:
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = 0
        self.counts: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()
        outer = self

        class Handler(QuietJsonHandler):
            def do_GET(self) -> None:  # noqa: N802
                with outer.lock:
                    outer.counts[self.path] += 1
                    count = outer.counts[self.path]
                    held = not outer.gate.is_set()
                    outer.waiting += held
                if held:
                    outer.gate.wait(10)
                    with outer.lock:
                        outer.waiting -= 1
                time.sleep(outer.delay)
                try:
                    self.send_json(200, {"path": self.path, "count": count})
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the connector that asked was killed while waiting: the count stands

        super().__init__(Handler)

    def count(self, path: str) -> int:
        with self.lock:
            return self.counts.get(path, 0)


@dataclass
class Kill:
    kind: str
    at: float
    """time.time() of the SIGKILL (grid processes stamp the journal with the same clock)."""
    pids: list[int]
    held: list[tuple[str, int]] = field(default_factory=list)
    """Requests the killed processes held a moment before the kill (those still open then must end interrupted)."""
    before: list[str] = field(default_factory=list)
    """The ids of the grid's processes before the kill (to tell their replacements' work apart)."""
    restarted_at: float | None = None
    left_in_flight: list[tuple[str, int]] = field(default_factory=list)
    """For a grid restart: the requests the dead grid left leased and unanswered (read from the Flow DB)."""
    declared_after_restart: float | None = None
    """Seconds from the new grid being up until the last of ``left_in_flight`` was answered."""


@dataclass
class Report:
    problems: list[str]
    kill: Kill | None
    first_action_after_kill: float | None
    """Seconds from the kill to the first journal request any flow made after it."""
    first_served_after_kill: float | None
    """Seconds from the kill to the first work done by what replaced the killed kind (see ``_served``)."""
    last_done_after_kill: float | None
    interrupted: int
    flows: int


class FaultRun:
    """One workload on one grid home, with at most one kill (``kind=None`` runs it undisturbed)."""

    def __init__(self, paths: GridPaths, project: Path, server: SlowCountingServer, roots: int = 30,
                 workers: int = 2, nap: float = 0.5, layout: Layout | None = None) -> None:
        self.paths = paths
        self.layout = layout
        """How a restart after a whole-grid kill starts the grid again (None: the whole grid here)."""
        self.project = project
        self.server = server
        self.roots = roots
        self.workers = workers
        self.nap = nap
        self.hold = project / "hold-execs"
        self.ids: dict[str, int] = {}
        self.kill: Kill | None = None
        state = paths.read_state()
        self.client = GridClient(state["url"]) if state else self._start_grid()

    # -- the grid -----------------------------------------------------------------------------

    def _start_grid(self) -> GridClient:
        state = start_background(self.paths, workers=self.workers, layout=self.layout, timeout=60)
        return GridClient(state["url"])

    def call(self, what: Any, timeout: float = 60.0) -> Any:
        """A Client API call, retried while the Client API is down (it is restarted after a kill)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return what(self.client)
            except GridUnreachable:
                # Retried whatever the call: a message sent twice is harmless here (each flow reads one).
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def processes(self) -> list[dict[str, Any]]:
        return [p for p in self.call(lambda c: c.processes()) if p["alive"]]

    # -- the workload ---------------------------------------------------------------------------

    def start(self) -> None:
        script = write_file(self.project, "faults.flow", WORKLOAD)
        built = build_bundle(script)
        self.client.upload_bundle(built.data, built.digest)
        for n in range(self.roots):
            args = {"n": n, "url": self.server.url, "nap": self.nap, "hold": str(self.hold)}
            self.ids[str(self.client.start_flow(built.digest, args, name="faults.flow")["id"])] = n
        self.send(lambda n: n % 2 == 0)

    def send(self, which: Any) -> None:
        for flow_id, n in self.ids.items():
            if which(n):
                self.call(lambda c, f=flow_id, m=message(n): c.send(f, m))

    def wait_busy(self, kind: str | None, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Wait until the workload is under way (a third of the flows done); then, for a connector that
        performs requests, hold its requests (the server's gate, the exec hold file) until it holds one."""
        deadline = time.monotonic() + timeout
        while sum(f["status"] == "completed" for f in self.client.list_flows(limit=1000)) < self.roots // 3:
            if time.monotonic() > deadline:
                raise AssertionError(f"the workload did not get under way within {timeout:g} s")
            time.sleep(0.05)
        if kind == "connector:http":
            self.server.gate.clear()
        elif kind == "connector:resources":
            self.hold.touch()
        while time.monotonic() < deadline:
            processes = self.processes()
            if self._target_busy(kind, processes):
                return processes
            time.sleep(0.05)
        raise AssertionError(f"the workload never kept {kind} busy within {timeout:g} s")

    def _target_busy(self, kind: str | None, processes: list[dict[str, Any]]) -> bool:
        if kind == "worker":
            return any(p["flows"] for p in processes if p["role"] == "worker")
        if kind in HOLDS_REQUESTS:
            held = [r["kind"] for p in processes if p["role"] == kind for r in p["requests"]]
            if kind == "connector:http":
                return "http" in held and self.server.waiting > 0
            return "exec" in held
        if kind in RESTARTS_GRID:
            return any(p["requests"] for p in processes if p["role"] in HOLDS_REQUESTS)
        return True

    def release(self) -> None:
        """Let held requests go (after the kill): the server's gate opens, the exec hold file goes."""
        self.server.gate.set()
        self.hold.unlink(missing_ok=True)

    def inflict(self, kind: str | None) -> None:
        """Wait for the workload to be busy, SIGKILL ``kind`` (restart the grid if it is gone), send the rest."""
        try:
            processes = self.wait_busy(kind)
            self._kill(kind, processes)
        finally:
            self.release()
        self.send(lambda n: n % 2 == 1)

    def _kill(self, kind: str | None, processes: list[dict[str, Any]]) -> None:
        if kind is not None:
            # (workers on other machines are not this machine's to kill: they outlive the grid and come back to it)
            targets = [p for p in processes if (kind == "everything" or p["role"] == kind) and not p.get("remote")]
            slow = ("http", "exec")  # held at the server's gate or the hold file: certainly in flight
            held = [(r["flow_id"], r["seq"]) for p in targets for r in p["requests"] if r["kind"] in slow]
            self.kill = Kill(kind, time.time(), [int(p["pid"]) for p in targets], held,
                             before=[str(p["id"]) for p in processes])
            for process in targets:
                os.kill(int(process["pid"]), signal.SIGKILL)
            if kind in RESTARTS_GRID:
                self._restart([int(p["pid"]) for p in processes if not p.get("remote")])
        else:
            self.kill = Kill("none", time.time(), [])

    def _restart(self, old_pids: list[int], timeout: float = 20.0) -> None:
        """The grid is gone (its children die with the supervisor): note what it left in flight, start it again."""
        assert self.kill is not None
        deadline = time.monotonic() + timeout
        while any(pid_alive(pid) for pid in old_pids):
            assert time.monotonic() < deadline, "the grid's processes outlived their supervisor"
            time.sleep(0.02)
        self.kill.left_in_flight = left_in_flight(self.paths)
        self.client.close()
        self.client = self._start_grid()
        self.kill.restarted_at = time.time()
        self._wait_declared(self.kill)

    def _wait_declared(self, kill: Kill) -> None:
        """After a restart: when did the last request the old grid left in flight get its answer?"""
        assert kill.restarted_at is not None
        open_ = set(kill.left_in_flight)
        deadline = time.monotonic() + INTERRUPTED_AFTER_RESTART + 5
        while open_ and time.monotonic() < deadline:
            for flow_id in {f for f, _ in open_}:
                for entry in self.client.get_flow(flow_id)["journal"]:
                    if (flow_id, entry["seq"]) in open_ and entry["result"] is not None:
                        open_.discard((flow_id, entry["seq"]))
            time.sleep(0.05)
        if not open_:
            kill.declared_after_restart = time.time() - kill.restarted_at

    def wait_done(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            roots = self.call(lambda c: c.list_flows(roots_only=True, limit=1000))
            if all(f["status"] in FINISHED for f in roots if f["id"] in self.ids) and len(roots) >= len(self.ids):
                return
            time.sleep(0.1)

    # -- the checks -----------------------------------------------------------------------------

    def report(self) -> Report:
        problems: list[str] = []
        flows = self.call(lambda c: c.list_flows(limit=5000))
        by_root: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for flow in flows:
            by_root[flow["root"]].append(flow)
        journals = {f["id"]: self.call(lambda c, i=f["id"]: c.get_flow(i))["journal"] for f in flows}
        still = [f for f in flows if f["status"] not in FINISHED]
        if still:
            problems.append(f"{len(still)} flows never finished (lost): "
                            + ", ".join(f"{f['id']} {f['flow']} {f['status']}" for f in still[:5]))
        for root, n in self.ids.items():
            problems += self._check_tree(root, n, by_root[root])
        answered, interrupted = self._check_requests(journals, problems)
        for path, oks in sorted(answered.items()):
            sent, lost = self.server.count(path), interrupted.get(path, 0)
            if len(oks) != 1:
                problems.append(f"{path}: {len(oks)} answered requests recorded, expected 1")
            if len(set(oks)) != len(oks) or not len(oks) <= sent <= len(oks) + lost:
                problems.append(f"{path}: the server was sent {sent} requests; the journal records {len(oks)} "
                                f"answered and {lost} interrupted (a recorded request was performed twice)")
        problems += self._check_kill(journals)
        return Report(problems, self.kill, *self._recovery(flows, journals),
                      sum(1 for entries in journals.values() for e in entries if _interrupted(e)), len(flows))

    def _check_tree(self, root: str, n: int, tree: list[dict[str, Any]]) -> list[str]:
        problems = []
        top = next((f for f in tree if f["id"] == root), None)
        if top is None or top["status"] != "completed":
            return [f"root {root} (n={n}) is {top and top['status']}: {top and top['error']}"]
        lines = [e["text"] for e in self._events(root) if e["type"] == "log"]
        if [json.loads(line) for line in lines] != [expected_line(n)]:
            problems.append(f"root {root} (n={n}) printed {lines}, expected once {json.dumps(expected_line(n))}")
        children = [f for f in tree if f["parent"] == root]
        squares = [f for f in children if f["flow"].endswith("square")]
        triples = [f for f in children if f["flow"].endswith("triple")]
        if [f["status"] for f in squares] != ["completed"]:
            problems.append(f"root {root}: square children {[f['status'] for f in squares]}, expected one, completed")
        if [f["status"] for f in triples].count("completed") != 1:
            problems.append(f"root {root}: triple children {[f['status'] for f in triples]}, expected one completed")
        for child in triples:
            if child["status"] == "failed" and "interrupted" not in json.dumps(child["error"]):
                problems.append(f"child {child['id']} failed for another reason than an interruption: {child['error']}")
        return problems

    def _events(self, root: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        cursor = 0
        while True:
            page = self.call(lambda c: c.events(after=cursor, root=root))
            if not page["events"]:
                return events
            cursor = page["cursor"]
            events += page["events"]

    @staticmethod
    def _check_requests(journals: dict[str, list[dict[str, Any]]], problems: list[str]) -> tuple[
            dict[str, list[int]], dict[str, int]]:
        """Every request answered; errors only interruptions, each retried by the flow; HTTP answers per path."""
        answered: dict[str, list[int]] = defaultdict(list)
        interrupted: dict[str, int] = defaultdict(int)
        for flow_id, entries in journals.items():
            for index, entry in enumerate(entries):
                result = entry["result"]
                if result is None:
                    problems.append(f"flow {flow_id} entry {entry['seq']} ({entry['kind']}) has no result")
                    continue
                if entry["kind"] not in ("http", "exec", "open"):
                    continue
                path = urlsplit(entry["args"].get("url", "")).path if entry["kind"] == "http" else ""
                if result["ok"]:
                    if path:
                        answered[path].append(result["value"]["json"]["count"])
                    continue
                if result["error"] != INTERRUPTED:
                    problems.append(f"flow {flow_id} entry {entry['seq']} ({entry['kind']}) failed: {result['error']}")
                    continue
                if path:
                    interrupted[path] += 1
                retried = [e for e in entries[index + 1:] if e["kind"] == entry["kind"] and e["args"] == entry["args"]]
                if entry["kind"] != "open" and not retried:
                    problems.append(f"flow {flow_id} entry {entry['seq']} ({entry['kind']}) was interrupted "
                                    "and never retried by the flow")
        return answered, interrupted

    def _check_kill(self, journals: dict[str, list[dict[str, Any]]]) -> list[str]:
        kill = self.kill
        if kill is None or kill.kind == "none":
            return []
        results = {(flow_id, e["seq"]): e["result"] for flow_id, entries in journals.items() for e in entries}
        problems = []
        if kill.kind in HOLDS_REQUESTS:
            if not any(_interrupted({"result": results.get(r)}) for r in kill.held):
                problems.append(f"the {kill.kind} kill found requests in flight ({kill.held}) "
                                "but none was declared interrupted")
        for request in kill.left_in_flight:
            if not _interrupted({"result": results.get(request)}):
                problems.append(f"request {request} left in flight by the killed grid ended {results.get(request)}, "
                                "not declared interrupted")
        if kill.left_in_flight and (kill.declared_after_restart is None
                                    or kill.declared_after_restart > INTERRUPTED_AFTER_RESTART):
            took = "more than" if kill.declared_after_restart is None else f"{kill.declared_after_restart:.1f} s,"
            problems.append(f"the restarted grid declared the {len(kill.left_in_flight)} requests left in flight "
                            f"interrupted after {took} {INTERRUPTED_AFTER_RESTART + 5:g} s (at most "
                            f"{INTERRUPTED_AFTER_RESTART:g} s: a new grid knows nothing of the old one survives)")
        return problems

    def _recovery(self, flows: list[dict[str, Any]], journals: dict[str, list[dict[str, Any]]]) -> tuple[
            float | None, float | None, float | None]:
        """Seconds from the kill to the first request after it, to the first work served by the killed
        kind's replacement, and to the last root done (None when that never happened)."""
        if self.kill is None:
            return None, None, None
        at = self.kill.at
        entries = [e for es in journals.values() for e in es]
        requested = [e["requested_at"] for e in entries if (e.get("requested_at") or 0) > at]
        served = [t for t in (self._served(e) for e in entries) if t is not None and t > at]
        finished = [f["finished"] for f in flows if f["id"] in self.ids and f["finished"]]
        return (min(requested) - at if requested else None, min(served) - at if served else None,
                max(finished) - at if len(finished) == len(self.ids) else None)

    def _served(self, entry: dict[str, Any]) -> float | None:
        """When this entry shows the killed kind at work again: a connector's answer of its kind, a
        request written by a new worker, any request for the Worker API or a restarted grid, a
        message delivered for the Client API. None if it shows nothing of the kind."""
        assert self.kill is not None
        kind, result = self.kill.kind, entry["result"]
        answered = entry.get("answered_at") if result is not None and result["ok"] else None
        answers = {"connector:http": ("http",), "connector:resources": ("exec", "open"),
                   "connector:clock": ("sleep",), "connector:inbox": ("receive",), "client-api": ("receive",)}
        if kind in answers:
            return answered if entry["kind"] in answers[kind] else None
        if kind == "worker":
            return entry.get("requested_at") if entry.get("worker") not in self.kill.before else None
        if kind in RESTARTS_GRID and self.kill.restarted_at is not None:
            requested = entry.get("requested_at") or 0
            return requested if requested > self.kill.restarted_at else None
        return entry.get("requested_at")

    def close(self) -> None:
        self.client.close()


def left_in_flight(paths: GridPaths) -> list[tuple[str, int]]:
    """The requests leased to a connector and unanswered, read from the Flow DB (file or PostgreSQL)."""
    sql = "SELECT flow_id, seq FROM journal WHERE executor IS NOT NULL AND result IS NULL"
    if paths.db_url is None:
        with sqlite3.connect(paths.db) as db:
            return [(str(row[0]), int(row[1])) for row in db.execute(sql)]

    async def read() -> list[tuple[str, int]]:
        store = await FlowStore.open(paths.flow_db)
        try:
            return [(str(row[0]), int(row[1])) for row in await store.engine.all(sql)]
        finally:
            await store.close()

    return asyncio.run(read())


def _interrupted(entry: dict[str, Any]) -> bool:
    result = entry.get("result")
    return result is not None and not result["ok"] and result["error"] == INTERRUPTED

