"""Benchmark docker.container resources: what open, exec and close cost through Flowmetal, beside the
raw Engine API calls that perform them, in one run on the same engine (JSON lines).

raw: the Docker SDK calls the resources connector makes (create+start; exec create+start+inspect;
stop+remove), timed here. flowmetal: N flows, each a child with one container doing K execs of
``true``; open and exec are timed from the journal (request committed -> result committed: claim,
Engine API, record), exec also as the flow sees it (one request to the next), and close from the
flow's end to the engine's destroy event (the sweep runs every 0.5 s). The ratio is the overhead.

    python bench/bench_docker.py [--flows 10] [--execs 10] [--image IMAGE]
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

import docker

from flowmetal_cli.client import GridClient
from grid_local.bundle_format import write_bundle
from grid_local.connectors.containers import LABEL_GRID, grid_label
from grid_local.home import GridPaths
from grid_local.supervisor import start_background, stop_background

FINISHED = ("completed", "failed", "cancelled")
SCRIPT = """
load("pkg.flowmetal.io/docker/v1", "docker")

def _job_impl(fctx):
    for i in range(fctx.args.execs):
        docker.exec(fctx.resources.box, ["true"])
    return fctx.args.execs

job = flow(implementation = _job_impl, resources = {"box": lambda fctx: docker.container(image = fctx.args.image)})

if __name__ == "__flow__":
    job(image = fctx().args.image, execs = fctx().args.execs)
"""


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def emit(record: dict[str, Any]) -> None:
    print(json.dumps({**record, "machine": machine()}), flush=True)


def ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(ordered[max(int(0.95 * len(ordered)) - 1, 0)] * 1000, 1), "n": len(ordered)}


def raw(api: Any, image: str, containers: int, execs: int) -> dict[str, list[float]]:
    """The connector's Engine API calls, without Flowmetal."""
    timings: dict[str, list[float]] = {"open": [], "exec": [], "close": []}
    for number in range(containers):
        began = time.perf_counter()
        host = api.create_host_config(init=True, network_mode="none")
        created = api.create_container(image, entrypoint=["sleep"], command=["infinity"], host_config=host,
                                       name=f"flowmetal-bench-raw-{os.getpid()}-{number}",
                                       labels={"io.flowmetal.bench": "raw"})
        api.start(created["Id"])
        timings["open"].append(time.perf_counter() - began)
        try:
            for _ in range(execs):
                began = time.perf_counter()
                exec_id = api.exec_create(created["Id"], ["true"])["Id"]
                list(api.exec_start(exec_id, stream=True, demux=True))
                assert api.exec_inspect(exec_id)["ExitCode"] == 0
                timings["exec"].append(time.perf_counter() - began)
        finally:
            began = time.perf_counter()
            api.stop(created["Id"], timeout=2)
            api.remove_container(created["Id"], v=True, force=True)
            timings["close"].append(time.perf_counter() - began)
    return timings


class DestroyEvents(threading.Thread):
    """The engine's destroy events of one grid's containers: container name -> when (seconds)."""

    def __init__(self, client: Any, grid: str) -> None:
        super().__init__(daemon=True)
        self.stream = client.events(decode=True, filters={"event": "destroy", "label": f"{LABEL_GRID}={grid}"})
        self.destroyed: dict[str, float] = {}

    def run(self) -> None:
        try:
            for event in self.stream:
                self.destroyed[event["Actor"]["Attributes"]["name"]] = event["timeNano"] / 1e9
        except Exception:
            pass  # closed at the end of the run


def through_flowmetal(client: GridClient, engine: Any, grid: str, image: str, flows: int,
                      execs: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"open": [], "exec": [], "exec_flow": [], "close": []}
    data, digest = write_bundle("bench.flow", {"bench.flow": SCRIPT}, {})
    client.upload_bundle(data, digest)
    events = DestroyEvents(engine, grid)
    events.start()
    children = []
    for _ in range(flows + 1):  # the first one warms the worker, the connector and the SDK up
        root = client.start_flow(digest, {"image": image, "execs": execs})["id"]
        deadline = time.monotonic() + 120
        while client.get_flow(root)["status"] not in FINISHED:
            if time.monotonic() > deadline:
                raise TimeoutError(root)
            time.sleep(0.02)
        child = next(f for f in client.list_flows(root=root) if f["parent"] == root)
        children.append(client.get_flow(child["id"]))
    for child in children[1:]:
        assert child["status"] == "completed", child["error"]
        journal = child["journal"]
        opened = journal[0]
        timings["open"].append(opened["answered_at"] - opened["requested_at"])
        runs = [e for e in journal if e["kind"] == "exec"]
        timings["exec"] += [e["answered_at"] - e["requested_at"] for e in runs]
        timings["exec_flow"] += [b["requested_at"] - a["requested_at"] for a, b in zip(runs, runs[1:])]
        name = opened["result"]["value"]["container"]
        deadline = time.monotonic() + 10
        while name not in events.destroyed and time.monotonic() < deadline:
            time.sleep(0.02)
        timings["close"].append(events.destroyed[name] - child["finished"])
    events.stream.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=10, help="flows (containers) through Flowmetal, and raw")
    parser.add_argument("--execs", type=int, default=10, help="execs per container")
    parser.add_argument("--image", default="", help="image to run (default: build the busybox test image)")
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args()
    for stop in (signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(stop, lambda *_: sys.exit(1))  # so that `finally` stops the grid
    engine = docker.from_env(timeout=60)
    image = options.image
    if not image:
        from tests.integration.docker_engine import build_test_image
        image = build_test_image(engine)
    raw_timings = raw(engine.api, image, options.flows, options.execs)
    home = Path(tempfile.mkdtemp(prefix="flowmetal-bench-"))
    paths = GridPaths(home)
    state = start_background(paths, workers=options.workers)
    client = GridClient(state["url"])
    try:
        timings = through_flowmetal(client, engine, grid_label(home), image, options.flows, options.execs)
    finally:
        client.close()
        stop_background(paths)
        for container in engine.containers.list(all=True, filters={"label": f"{LABEL_GRID}={grid_label(home)}"}):
            container.remove(force=True, v=True)
    for op, flowmetal_key in (("open", "open"), ("exec", "exec"), ("exec", "exec_flow"), ("close", "close")):
        mine, theirs = ms(timings[flowmetal_key]), ms(raw_timings[op])
        emit({"bench": "docker", "op": flowmetal_key, "flowmetal": mine, "raw_engine_api": theirs,
              "ratio_p50": round(mine["p50_ms"] / theirs["p50_ms"], 2) if theirs["p50_ms"] else None,
              "image": image})


if __name__ == "__main__":
    main()
