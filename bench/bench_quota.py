"""Benchmark the quota tree on the local grid (default settings, 2 workers): one JSON line each.

- admission cost: W1 (start-to-result latency of a one-step flow, p50/p95 over 50 runs) and W3
  (200 flows of 10 steps submitted at once), in a three-level tree with no limits ("off") and with
  every limit set on every level, high enough never to refuse ("on": each start counts live flows
  and the last minute's starts at three ancestors, each claim applies running limits and the fair
  order, each append checks the journal caps);
- fairness: the start-to-result latency of a one-step flow in /web while a sibling /ci holds a flood
  of queued flows (each sleeping 0.5 s in its worker slot), against the same flow on the idle grid;
  and the same under a running limit of 4 on their common parent (where first in, first out would
  make /web wait for the whole queue).

    python bench/bench_quota.py [--flood 400]
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flowmetal_cli.client import GridClient
from grid_local.bundle_format import write_bundle
from grid_local.home import GridPaths
from grid_local.supervisor import start_background, stop_background

FINISHED = ("completed", "failed", "cancelled")
HOME = f"/local/{getpass.getuser()}"
SCRIPTS = {
    "one.flow": "fctx().actions.now()\n",
    "ten.flow": "a = fctx().actions\nfor i in range(10):\n    a.now()\n",
    "busy.flow": "fctx().actions.sleep(0.5)\n",
    "short.flow": "fctx().actions.sleep(0.2)\n",
}
GENEROUS = {"running": 10_000, "rate": 1_000_000, "live": 100_000, "journal_entries": 100_000,
            "journal_bytes": 10**9, "bundle_bytes": 10**8, "eval_budget": 60.0, "memory": 1024}


def emit(record: dict[str, Any]) -> None:
    machine = {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    print(json.dumps({**record, "machine": machine}), flush=True)


def wait_done(client: GridClient, flow_id: str, timeout: float = 120.0) -> None:
    cursor = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = client.events(after=cursor, root=flow_id, wait=5)
        cursor = page["cursor"]
        if any(e["type"] == "flow" and e["flow_id"] == flow_id and e.get("status") in FINISHED for e in page["events"]):
            return
    raise TimeoutError(flow_id)


def wait_all(client: GridClient, ids: set[str], cursor: int, timeout: float = 600.0) -> None:
    remaining = set(ids)
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        page = client.events(after=cursor, wait=5)
        cursor = page["cursor"]
        remaining -= {e["flow_id"] for e in page["events"] if e["type"] == "flow" and e.get("status") in FINISHED}
    if remaining:
        raise TimeoutError(f"{len(remaining)} flows unfinished")


def latency_ms(client: GridClient, digest: str, quota: str) -> float:
    began = time.perf_counter()
    wait_done(client, client.start_flow(digest, {}, quota=quota)["id"])
    return (time.perf_counter() - began) * 1000


def admission(client: GridClient, digests: dict[str, str], checks: str) -> None:
    tree = f"{HOME}/{checks}"
    levels = [tree, f"{tree}/x", f"{tree}/x/y"]
    for node in levels:
        client.quota_set(node, GENEROUS if checks == "on" else {})
    leaf = levels[-1]
    latency_ms(client, digests["one.flow"], leaf)  # warm-up
    runs = sorted(latency_ms(client, digests["one.flow"], leaf) for _ in range(50))
    emit({"workload": "W1", "quota_checks": checks, "runs": 50, "p50_ms": round(statistics.median(runs), 2),
          "p95_ms": round(runs[int(0.95 * len(runs)) - 1], 2)})
    cursor = client.events(after=0, wait=0)["cursor"]
    while True:  # the cursor at the end of the log
        page = client.events(after=cursor, wait=0)
        if not page["events"]:
            break
        cursor = page["cursor"]
    began = time.perf_counter()
    ids = {client.start_flow(digests["ten.flow"], {}, quota=leaf)["id"] for _ in range(200)}
    wait_all(client, ids, cursor)
    elapsed = time.perf_counter() - began
    emit({"workload": "W3", "quota_checks": checks, "flows": 200, "seconds": round(elapsed, 3),
          "flows_per_s": round(200 / elapsed, 1)})


def fairness(client: GridClient, digests: dict[str, str], flood: int) -> None:
    web, ci = f"{HOME}/fair/web", f"{HOME}/fair/ci"
    latency_ms(client, digests["one.flow"], web)
    idle = statistics.median(latency_ms(client, digests["one.flow"], web) for _ in range(5))
    ids = [client.start_flow(digests["busy.flow"], {}, quota=ci)["id"] for _ in range(flood)]
    queued = client.quota_show(ci)["usage"]["pending"]
    flooded = [latency_ms(client, digests["one.flow"], web) for _ in range(5)]
    client.cancel_subtree(ci)
    emit({"workload": "fairness", "flood": flood, "queued_when_measured": queued, "idle_ms": round(idle, 1),
          "flooded_median_ms": round(statistics.median(flooded), 1), "flooded_max_ms": round(max(flooded), 1),
          "factor": round(statistics.median(flooded) / idle, 2), "flood_flows": len(ids)})


def fairness_under_a_limit(client: GridClient, digests: dict[str, str], flood: int) -> None:
    """/shared allows 4 running flows; /shared/ci queues ``flood`` flows of 0.2 s; a /shared/web flow
    should wait for one slot, not for the queue (first in, first out: queued * 0.2 s / 4)."""
    top = f"{HOME}/shared"
    client.quota_set(top, {"running": 4})
    web, ci = f"{top}/web", f"{top}/ci"
    latency_ms(client, digests["one.flow"], web)
    idle = statistics.median(latency_ms(client, digests["one.flow"], web) for _ in range(5))
    for _ in range(flood):
        client.start_flow(digests["short.flow"], {}, quota=ci)
    queued = client.quota_show(ci)["usage"]["pending"]
    flooded = latency_ms(client, digests["one.flow"], web)
    client.cancel_subtree(ci)
    emit({"workload": "fairness_under_limit", "running_limit": 4, "flood": flood, "queued_when_measured": queued,
          "idle_ms": round(idle, 1), "flooded_ms": round(flooded, 1), "factor": round(flooded / idle, 2),
          "fifo_estimate_ms": round(queued * 200 / 4, 0)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flood", type=int, default=400)
    options = parser.parse_args()
    for stop in (signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(stop, lambda *_: sys.exit(1))  # so that `finally` stops the grid
    paths = GridPaths(Path(tempfile.mkdtemp(prefix="flowmetal-bench-quota-")))
    state = start_background(paths, workers=2)
    client = GridClient(state["url"])
    try:
        digests = {}
        for name, source in SCRIPTS.items():
            data, digest = write_bundle(name, {name: source}, {})
            client.upload_bundle(data, digest)
            digests[name] = digest
        for checks in ("off", "on", "off", "on"):  # twice each, interleaved: the machine is shared
            admission(client, digests, checks)
        fairness(client, digests, options.flood)
        fairness_under_a_limit(client, digests, 150)
    finally:
        client.close()
        stop_background(paths, timeout=20)


if __name__ == "__main__":
    main()
