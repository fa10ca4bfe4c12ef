"""Benchmark the triggers on the local grid (2 workers): one JSON line per workload.

H1 webhook latency over 100 signed deliveries, one at a time: request to 202 (``accepted``) and
request to the flow running on a worker (``started``: the flow's first ``running`` event, stamped
by the grid on the same clock); H2 sustained webhook throughput: 8 senders posting signed
deliveries for ``--seconds`` seconds (accepted per second, and how long the grid then takes to
finish every flow they started). On a second grid with a virtual clock: V1 a flow sleeping 7 days
(start to completion, wall time), V2 an hourly schedule firing 24 times (a virtual day: from the
schedule's creation to the 24th flow finished, wall time).

    python bench/bench_triggers.py [--workers 2] [--seconds 10]
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
import uuid
from pathlib import Path
from typing import Any

import httpx

from flowmetal_cli.client import GridClient
from grid_local.bundle_format import write_bundle
from grid_local.home import GridPaths
from grid_local.supervisor import start_background, stop_background
from grid_local.triggers.signatures import sign

FINISHED = ("completed", "failed", "cancelled")
SECRET = "bench-secret"
HOOKED = "request = fctx().args.request\nfctx().actions.now()\n"
WEEK = "a = fctx().actions\na.now()\na.sleep(7 * 24 * 3600)\na.now()\n"
BODY = json.dumps({"action": "opened", "number": 1, "repository": {"full_name": "acme/api"}}).encode()


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "load_1m": round(os.getloadavg()[0], 2)}


def emit(record: dict[str, Any]) -> None:
    print(json.dumps({**record, "machine": machine()}), flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return round(ordered[max(int(fraction * len(ordered)) - 1, 0)], 2)


def signed(delivery: str) -> dict[str, str]:
    return {"X-Hub-Signature-256": sign(SECRET, BODY), "X-GitHub-Delivery": delivery,
            "Content-Type": "application/json"}


def first_event(client: GridClient, flow_id: str, status: tuple[str, ...], timeout: float = 60.0) -> dict[str, Any]:
    cursor = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = client.events(after=cursor, root=flow_id, wait=5)
        cursor = page["cursor"]
        for event in page["events"]:
            if event["type"] == "flow" and event["flow_id"] == flow_id and event.get("status") in status:
                return event
    raise TimeoutError(flow_id)


def wait_all(client: GridClient, ids: set[str], timeout: float = 600.0) -> None:
    remaining = set(ids)
    cursor = 0
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        page = client.events(after=cursor, wait=5)
        cursor = page["cursor"]
        for event in page["events"]:
            if event["type"] == "flow" and event.get("status") in FINISHED:
                remaining.discard(event["flow_id"])
    if remaining:
        raise TimeoutError(f"{len(remaining)} flows unfinished")


def latency(client: GridClient, hook_url: str, runs: int) -> None:
    accepted, started = [], []
    with httpx.Client(timeout=30) as http:
        for _ in range(runs):
            sent = time.time()
            response = http.post(hook_url, content=BODY, headers=signed(uuid.uuid4().hex))
            accepted.append((time.time() - sent) * 1000)
            assert response.status_code == 202, response.text
            flow_id = response.json()["flow_id"]
            running = first_event(client, flow_id, ("running",))
            started.append((running["at"] - sent) * 1000)
            first_event(client, flow_id, FINISHED)
    emit({"workload": "H1", "deliveries": runs, "accepted_p50_ms": percentile(accepted, 0.5),
          "accepted_p95_ms": percentile(accepted, 0.95), "started_p50_ms": percentile(started, 0.5),
          "started_p95_ms": percentile(started, 0.95),
          "note": "accepted: request to 202; started: request to the flow running on a worker"})


def throughput(client: GridClient, hook_url: str, seconds: float, senders: int = 8) -> None:
    ids: set[str] = set()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def send() -> None:
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < stop_at:
                response = http.post(hook_url, content=BODY, headers=signed(uuid.uuid4().hex))
                if response.status_code == 202:
                    with lock:
                        ids.add(response.json()["flow_id"])

    began = time.perf_counter()
    threads = [threading.Thread(target=send) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sending = time.perf_counter() - began
    wait_all(client, ids)
    done = time.perf_counter() - began
    emit({"workload": "H2", "senders": senders, "seconds": round(sending, 2), "accepted": len(ids),
          "accepted_per_s": round(len(ids) / sending, 1), "all_finished_after_s": round(done, 2),
          "finished_per_s": round(len(ids) / done, 1)})


def virtual_clock(client: GridClient) -> None:
    data, digest = write_bundle("week.flow", {"week.flow": WEEK}, {})
    client.upload_bundle(data, digest)
    runs = []
    for _ in range(5):
        began = time.perf_counter()
        flow_id = client.start_flow(digest, {})["id"]
        first_event(client, flow_id, FINISHED)
        runs.append(time.perf_counter() - began)
    flow = client.get_flow(flow_id)
    nows = [e["result"]["value"] for e in flow["journal"] if e["kind"] == "now"]
    emit({"workload": "V1", "virtual_seconds_slept": round(nows[1] - nows[0]), "runs": len(runs),
          "median_wall_s": round(statistics.median(runs), 3), "best_wall_s": round(min(runs), 3)})

    data, digest = write_bundle("tick.flow", {"tick.flow": "fctx().actions.now()\n"}, {})
    client.upload_bundle(data, digest)
    client.deploy("tick", digest)
    began = time.perf_counter()
    client.put_schedule("hourly", {"deployment": "tick", "cron": "0 * * * *", "overlap": "allow", "catch_up": "none"})
    finished = 0
    cursor = 0
    while finished < 24:
        page = client.events(after=cursor, wait=5)
        cursor = page["cursor"]
        finished += sum(1 for e in page["events"] if e["type"] == "flow" and e.get("status") == "completed"
                        and e.get("name") == "tick")
    elapsed = time.perf_counter() - began
    client.schedule_action("hourly", "pause")
    emit({"workload": "V2", "fires": 24, "virtual_hours": 24, "wall_s": round(elapsed, 3),
          "wall_ms_per_fire": round(elapsed / 24 * 1000, 1)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=100)
    options = parser.parse_args()
    for stop in (signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(stop, lambda *_: sys.exit(1))  # so that `finally` stops the grid
    paths = GridPaths(Path(tempfile.mkdtemp(prefix="flowmetal-bench-")))
    state = start_background(paths, workers=options.workers)
    client = GridClient(state["url"])
    try:
        data, digest = write_bundle("hooked.flow", {"hooked.flow": HOOKED}, {})
        client.upload_bundle(data, digest)
        client.deploy("hooked", digest)
        client.put_hook("bench", {"deployment": "hooked", "signature": "github", "secret": SECRET, "to": "start"})
        hook_url = f"{state['url']}/hooks/bench"
        for _ in range(5):  # warm-up: the workers load the bundle and the prelude
            response = httpx.post(hook_url, content=BODY, headers=signed(uuid.uuid4().hex))
            first_event(client, response.json()["flow_id"], FINISHED)
        latency(client, hook_url, options.runs)
        throughput(client, hook_url, options.seconds)
    finally:
        client.close()
        stop_background(paths)
    paths = GridPaths(Path(tempfile.mkdtemp(prefix="flowmetal-bench-")))
    state = start_background(paths, workers=options.workers, clock="virtual")
    client = GridClient(state["url"])
    try:
        virtual_clock(client)
    finally:
        client.close()
        stop_background(paths)


if __name__ == "__main__":
    main()
