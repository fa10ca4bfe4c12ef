"""Benchmark the local grid (default settings, 2 workers): one JSON line per workload.

W1 start-to-result latency of a one-step flow (p50/p95 over 50 runs); W2 one flow of 100
sequential steps; W3 200 flows of 10 steps submitted at once; W4 one flow fanning out to 100
child flows; W5 a flow of 20 sequential 100 ms sleeps whose worker is SIGKILLed after the 5th;
W6 the same 2,000 child flows called in sequence by 200 roots of 10 and by 20 roots of 100 (a
flow waiting on its child must never keep children from running: the first must take at most
twice as long as the second); the memory a waiting flow costs a worker; and the peak memory (sum
of RSS and of PSS) of every grid process. A "step" is the cheapest journaled action: ``now()``
(W4: a child flow); W1c, W2c and W3c are W1-W3 with a child flow as the step. W1 and W1c also
print the median of each hop of their path (client, Flow DB commits, worker, back to the client),
taken from the clock of the events the Flow DB records.

    python bench/bench_grid.py [--workers 2] [--only W6,waiting]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from flowmetal_cli.client import GridClient
from grid_local.bundle_format import write_bundle
from grid_local.home import GridPaths
from grid_local.supervisor import start_background, stop_background
from grid_local.worker.settings import WorkerSettings

FINISHED = ("completed", "failed", "cancelled")

_CHILD = "def _step_impl(fctx):\n    return fctx.args.i + 1\n\nstep = flow(implementation = _step_impl)\n\n"

SCRIPTS = {
    "one.flow": "fctx().actions.now()\n",
    "hundred.flow": "a = fctx().actions\nfor i in range(100):\n    a.now()\n",
    "ten.flow": "a = fctx().actions\nfor i in range(10):\n    a.now()\n",
    "fanout.flow": (
        "def _leaf_impl(fctx):\n    return fctx.args.i\n\n"
        "leaf = flow(implementation = _leaf_impl)\n\n"
        "def main():\n"
        "    a = fctx().actions\n"
        "    tasks = [a.run(leaf, i = i) for i in range(100)]\n"
        "    total = 0\n"
        "    for r in a.wait(tasks):\n        total += unwrap(r)\n"
        "    print(total)\n\n"
        "if __name__ == \"__flow__\":\n    main()\n"
    ),
    "naps.flow": "a = fctx().actions\nfor i in range(20):\n    a.sleep(0.1)\n",
    "long.flow": "a = fctx().actions\nfor i in range(1000):\n    a.now()\na.receive()\n",
    "chain.flow": (
        "def _link_impl(fctx):\n    fctx.actions.now()\n    return fctx.args.i\n\n"
        "link = flow(implementation = _link_impl)\n\n"
        "if __name__ == \"__flow__\":\n"
        "    total = 0\n"
        "    for i in range(fctx().args.children):\n        total += link(i = i)\n"
        "    print(total)\n"
    ),
    "parked.flow": "fctx().actions.receive()\n",
    # The same workloads with a child flow as the step (a flow is Flowmetal's unit of composition:
    # calling one should cost about what an action does).
    "child_one.flow": _CHILD + "if __name__ == \"__flow__\":\n    step(i = 1)\n",
    "child_hundred.flow": _CHILD + "if __name__ == \"__flow__\":\n    for i in range(100):\n        step(i = i)\n",
    "child_ten.flow": _CHILD + "if __name__ == \"__flow__\":\n    for i in range(10):\n        step(i = i)\n",
}
# The waiting flows measured must stay in memory while they are counted (not suspend after 10 s).
SETTINGS = {"parked.flow": {"limits": {"suspend_after": 120}}}


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def emit(record: dict[str, Any]) -> None:
    print(json.dumps({**record, "machine": machine()}), flush=True)


class MemorySampler(threading.Thread):
    """Peaks of the grid's memory, sampled every 50 ms: the sum of each process's RSS (which counts
    the pages the processes share, such as the interpreter's, once per process) and the sum of
    their PSS (shared pages divided among the processes sharing them: the grid's real footprint)."""

    def __init__(self, paths: GridPaths) -> None:
        super().__init__(daemon=True)
        self.paths = paths
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_by_role: dict[str, int] = {}
        """Each role's own peak PSS (roles such as ``worker`` sum their processes)."""
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            state = self.paths.read_state() or {}
            rss = pss = 0
            by_role: dict[str, int] = {}
            for process in state.get("processes", []):
                try:
                    with open(f"/proc/{process['pid']}/smaps_rollup") as rollup:
                        for line in rollup:
                            if line.startswith("Rss:"):
                                rss += int(line.split()[1]) * 1024
                            elif line.startswith("Pss:"):
                                own = int(line.split()[1]) * 1024
                                pss += own
                                role = str(process.get("role", "?")).split(":")[0]
                                by_role[role] = by_role.get(role, 0) + own
                except (OSError, KeyError, TypeError):
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            for role, own in by_role.items():
                self.peak_by_role[role] = max(self.peak_by_role.get(role, 0), own)


def wait_root(client: GridClient, flow_id: str, timeout: float = 120.0,
              seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Follow the flow tree's events until its root finishes; every event is appended to ``seen``."""
    cursor = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = client.events(after=cursor, root=flow_id, wait=5)
        cursor = page["cursor"]
        for event in page["events"]:
            if seen is not None:
                seen.append(event)
            if event["type"] == "flow" and event["flow_id"] == flow_id and event.get("status") in FINISHED:
                return event
    raise TimeoutError(flow_id)


def hops(root: str, sent: float, events: list[dict[str, Any]], seen: float) -> list[tuple[str, float]]:
    """One run's path as (hop, ms) pairs: from the client's request through each event the Flow DB
    recorded (``at`` is the commit's clock, the same machine's) to the client seeing the end."""
    def label(event: dict[str, Any]) -> str:
        who = "root" if event["flow_id"] == root else "child"
        what = event.get("status") if event["type"] == "flow" else event.get("kind")
        return f"{who} {event['type']} {what}"
    path, previous, previous_at = [], "client sends start", sent
    for event in sorted(events, key=lambda e: e["id"]):
        path.append((f"{previous} -> {label(event)}", (event["at"] - previous_at) * 1000))
        previous, previous_at = label(event), event["at"]
    path.append((f"{previous} -> client sees it", (seen - previous_at) * 1000))
    return path


def median_hops(runs: list[list[tuple[str, float]]]) -> list[dict[str, Any]]:
    """The median of each hop over the runs that took the most common path."""
    shapes: dict[tuple[str, ...], list[list[tuple[str, float]]]] = {}
    for run in runs:
        shapes.setdefault(tuple(hop for hop, _ in run), []).append(run)
    common = max(shapes.values(), key=len)
    return [{"hop": hop, "p50_ms": round(statistics.median(run[i][1] for run in common), 2)}
            for i, (hop, _) in enumerate(common[0])]


def latency(client: GridClient, digest: str, runs: int = 50) -> dict[str, Any]:
    """W1: start-to-result latency of one flow, p50 and p95, with the median of each hop."""
    latencies, paths = [], []
    for _ in range(runs):
        events: list[dict[str, Any]] = []
        began, sent = time.perf_counter(), time.time()
        flow_id = client.start_flow(digest, {})["id"]
        wait_root(client, flow_id, seen=events)
        latencies.append((time.perf_counter() - began) * 1000)
        paths.append(hops(flow_id, sent, events, time.time()))
    latencies.sort()
    return {"runs": runs, "p50_ms": round(statistics.median(latencies), 2),
            "p95_ms": round(latencies[int(0.95 * len(latencies)) - 1], 2), "hops": median_hops(paths)}


def sequential(client: GridClient, digest: str, steps: int, runs: int = 5) -> dict[str, Any]:
    """W2: one flow of ``steps`` sequential steps, the median of ``runs``."""
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        wait_root(client, client.start_flow(digest, {})["id"])
        times.append(time.perf_counter() - began)
    elapsed = statistics.median(times)
    return {"steps": steps, "runs": runs, "median_seconds": round(elapsed, 3),
            "steps_per_s": round(steps / elapsed, 1), "best_steps_per_s": round(steps / min(times), 1)}


def throughput(client: GridClient, digest: str, flows: int, steps: int) -> dict[str, Any]:
    """W3: ``flows`` flows of ``steps`` steps each, submitted at once."""
    began = time.perf_counter()
    ids = {client.start_flow(digest, {})["id"] for _ in range(flows)}
    wait_all(client, ids)
    elapsed = time.perf_counter() - began
    return {"flows": flows, "steps": flows * steps, "seconds": round(elapsed, 3),
            "flows_per_s": round(flows / elapsed, 1), "steps_per_s": round(flows * steps / elapsed, 1)}


def fanout(client: GridClient, digest: str) -> dict[str, Any]:
    """W4: one flow fanning out to 100 child flows."""
    began = time.perf_counter()
    event = wait_root(client, client.start_flow(digest, {})["id"])
    return {"children": 100, "seconds": round(time.perf_counter() - began, 3), "status": event["status"]}


def worker_killed(client: GridClient, digest: str) -> dict[str, Any]:
    """W5: 20 sequential 100 ms sleeps; the flow's worker is SIGKILLed after the 5th."""
    flow_id = client.start_flow(digest, {})["id"]
    killed_at = None
    while killed_at is None:
        flow = client.get_flow(flow_id)
        answered = [e for e in flow["journal"] if e["result"] is not None]
        if len(answered) >= 5 and flow["worker"]:
            os.kill(int(flow["worker"].rsplit(".", 1)[1]), signal.SIGKILL)
            killed_at = time.perf_counter()
        else:
            time.sleep(0.005)
    event = wait_root(client, flow_id)
    recovery = time.perf_counter() - killed_at
    results = [e for e in client.events(after=0, root=flow_id)["events"] if e["type"] == "result"]
    seqs = [e["seq"] for e in results]
    return {"steps": 20, "kill_to_completion_s": round(recovery, 3),
            "steps_performed_again": len(seqs) - len(set(seqs)), "status": event["status"]}


def upload_scripts(client: GridClient) -> dict[str, str]:
    """Every workload's bundle on the grid, and the workers warmed up (bundles and prelude loaded)."""
    digests = {}
    for name, source in SCRIPTS.items():
        data, digest = write_bundle(name, {name: source}, SETTINGS.get(name, {}))
        client.upload_bundle(data, digest)
        digests[name] = digest
    for name in ("one.flow", "ten.flow", "child_one.flow"):
        wait_root(client, client.start_flow(digests[name], {})["id"])
    return digests


def wait_all(client: GridClient, ids: set[str], timeout: float = 300.0) -> None:
    cursor = client.events(after=0, wait=0)["cursor"] if False else 0
    remaining = set(ids)
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        page = client.events(after=cursor, wait=5)
        cursor = page["cursor"]
        for event in page["events"]:
            if event["type"] == "flow" and event.get("status") in FINISHED:
                remaining.discard(event["flow_id"])
    if remaining:
        raise TimeoutError(f"{len(remaining)} flows unfinished")


def chains(client: GridClient, digest: str, roots: int, children: int) -> float:
    """Seconds for ``roots`` root flows, each calling ``children`` child flows one after the other."""
    began = time.perf_counter()
    ids = {client.start_flow(digest, {"children": children})["id"] for _ in range(roots)}
    wait_all(client, ids, timeout=900)
    return time.perf_counter() - began


def workers_memory(paths: GridPaths) -> int:
    """The workers' PSS, summed (bytes)."""
    total = 0
    for process in (paths.read_state() or {}).get("processes", []):
        if process["role"] != "worker":
            continue
        with open(f"/proc/{process['pid']}/smaps_rollup") as rollup:
            total += sum(int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:"))
    return total


def waiting_memory(client: GridClient, paths: GridPaths, digest: str, count: int) -> dict[str, Any]:
    """What ``count`` flows waiting in workers' memory (each in receive()) cost the workers."""
    before = workers_memory(paths)
    ids = {client.start_flow(digest, {})["id"] for _ in range(count)}

    def held() -> int:
        return len([f for f in client.list_flows(status="running", limit=5000) if f["id"] in ids])

    deadline = time.monotonic() + 120
    while held() < count and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # the last ones reach their receive()
    held_count = held()
    after = workers_memory(paths)
    for flow_id in ids:
        client.cancel(flow_id)
    return {"workload": "waiting", "flows": count, "held_in_memory": held_count,
            "workers_pss_before_mib": round(before / 2**20, 1), "workers_pss_after_mib": round(after / 2**20, 1),
            "kib_per_waiting_flow": round((after - before) / max(held_count, 1) / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=None, help="flows each worker evaluates at once (grid up --slots)")
    parser.add_argument("--only", default="", help="comma-separated workloads to run (W1..W6, W1c..W3c, resume, waiting)")
    options = parser.parse_args()
    only = set(filter(None, options.only.split(",")))

    def wanted(name: str) -> bool:
        return not only or name in only
    for stop in (signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(stop, lambda *_: sys.exit(1))  # so that `finally` stops the grid
    home = Path(tempfile.mkdtemp(prefix="flowmetal-bench-"))
    paths = GridPaths(home)
    settings = None if options.slots is None else WorkerSettings(slots=options.slots)
    state = start_background(paths, workers=options.workers, worker_settings=settings)
    sampler = MemorySampler(paths)
    sampler.start()
    client = GridClient(state["url"])
    try:
        digests = upload_scripts(client)

        # Each of W1-W3 twice: the step an action (now()), then a child flow ("c").
        for suffix, one, hundred, ten in (("", "one", "hundred", "ten"), ("c", "child_one", "child_hundred", "child_ten")):
            step = "child flow" if suffix else "action"
            if wanted("W1" + suffix):
                emit({"workload": "W1" + suffix, "step": step, **latency(client, digests[f"{one}.flow"])})
            if wanted("W2" + suffix):
                emit({"workload": "W2" + suffix, "step": step, **sequential(client, digests[f"{hundred}.flow"], 100)})
            if wanted("W3" + suffix):
                emit({"workload": "W3" + suffix, "step": step, **throughput(client, digests[f"{ten}.flow"], 200, 10)})

        if wanted("W4"):
            emit({"workload": "W4", **fanout(client, digests["fanout.flow"])})
        if wanted("W5"):
            emit({"workload": "W5", **worker_killed(client, digests["naps.flow"])})
        if wanted("resume"):
            # Resume: a flow with a 1,000-entry journal loses its worker; the next one replays it.
            flow_id = client.start_flow(digests["long.flow"], {})["id"]
            while True:
                flow = client.get_flow(flow_id)
                if len(flow["journal"]) == 1001 and flow["worker"]:
                    break
                time.sleep(0.05)
            os.kill(int(flow["worker"].rsplit(".", 1)[1]), signal.SIGKILL)
            while client.get_flow(flow_id)["status"] != "pending":
                time.sleep(0.005)
            began = time.perf_counter()
            client.send(flow_id, "go")
            wait_root(client, flow_id)
            emit({"workload": "resume", "journal_entries": 1001, "send_to_completion_s": round(time.perf_counter() - began, 3),
                  "note": "includes claiming the flow, fetching its journal and replaying it on another worker"})
        if wanted("W6"):
            narrow = chains(client, digests["chain.flow"], roots=20, children=100)
            wide = chains(client, digests["chain.flow"], roots=200, children=10)
            emit({"workload": "W6", "child_flows": 2000, "roots_20x100_s": round(narrow, 3),
                  "roots_200x10_s": round(wide, 3), "ratio": round(wide / narrow, 2),
                  "children_per_s_200x10": round(2000 / wide, 1)})
        if wanted("waiting"):
            emit(waiting_memory(client, paths, digests["parked.flow"], 200))
        sampler.stop.set()
        sampler.join()
        emit({"workload": "memory", "workers": options.workers,
              "processes": len((paths.read_state() or {}).get("processes", [])),
              "peak_rss_sum_mib": round(sampler.peak_rss / (1024 * 1024), 1),
              "peak_pss_sum_mib": round(sampler.peak_pss / (1024 * 1024), 1),
              "peak_pss_by_role_mib": {role: round(peak / 2**20, 1) for role, peak in sorted(sampler.peak_by_role.items())}})
    finally:
        client.close()
        stop_background(paths)


if __name__ == "__main__":
    sys.exit(main())
