"""Workers elsewhere beside workers of the grid's own: one JSON line per run, each on a fresh grid.

The workload is the fault matrix's (tests/integration/fault_workload.py). Runs:

- ``local``: a grid with 2 workers of its own and one Worker API (the baseline);
- ``remote``: a grid started with --no-workers and 2 Worker API replicas, and 2 workers started as
  separate `flowmetal worker` processes with their own FLOWMETAL_HOME (only the URLs and a copy of
  the token file shared);
- ``local+kill-worker-api``: the baseline with its one Worker API SIGKILLed once the workload is
  busy (the workers wait for the supervisor to restart it);
- ``remote+kill-replica``: the remote run with the replica its workers use SIGKILLed (they go on
  through the other URL);
- ``remote+kill-worker``: the remote run with one remote worker SIGKILLed (its flows move on when
  their leases expire).

Each line has ``total_s`` (from the first start to the last root done), ``first_action_s`` and
``last_done_s`` after the kill, the problems found (lost flows, requests performed twice), and
``total_ratio`` against ``local``.

    python bench/bench_remote.py [--roots 20] [--runs local,remote,remote+kill-replica]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grid_local.layout import COMPONENTS  # noqa: E402
from tests.integration.fault_workload import FaultRun, Kill, SlowCountingServer  # noqa: E402
from tests.integration.spread import (  # noqa: E402
    Spread, kill_replica, remote_workers, start_spread, stop_spread, wait_until,
)

RUNS = ("local", "remote", "local+kill-worker-api", "remote+kill-replica", "remote+kill-worker")


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 1), "python": platform.python_version()}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def measure(name: str, roots: int, timeout: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="flowmetal-bench-remote-"))
    remote = name.startswith("remote")
    components = frozenset(COMPONENTS) - {"workers"} if remote else frozenset(COMPONENTS)
    spread: Spread | None = None
    server = SlowCountingServer(delay=0.3)
    try:
        spread = start_spread(tmp, components, workers=2, worker_apis=2 if remote else 1)
        victims = [spread.worker(f"far-{n}")[0] for n in (1, 2)] if remote else []
        if remote:
            remote_workers(spread, 2)
        run = FaultRun(spread.paths, spread.project, server, roots=roots, nap=0.3)
        began = time.time()
        run.start()
        run.wait_busy(None)
        if name.endswith("kill-worker-api") or name.endswith("kill-replica"):
            killed = kill_replica(spread, "worker-api-1" if remote else "worker-api")
            run.kill = Kill("worker-api", time.time(), [int(killed["pid"])])
        elif name.endswith("kill-worker"):
            with spread.client() as client:
                wait_until(lambda: [p for p in client.processes() if p.get("name") == "far-1" and p["flows"]], 60,
                           "far-1 to hold flows")
            victims[0].kill()
            run.kill = Kill("worker", time.time(), [victims[0].pid])
        else:
            run.kill = Kill("none", time.time(), [])
        run.send(lambda n: n % 2 == 1)
        run.wait_done(timeout)
        report = run.report()
        finished = [f["finished"] for f in run.call(lambda c: c.list_flows(roots_only=True, limit=1000))
                    if f["id"] in run.ids and f["finished"]]
        run.close()
        return {
            "run": name, "roots": roots, "flows": report.flows,
            "total_s": _rounded(max(finished) - began) if len(finished) == len(run.ids) else None,
            "first_action_s": _rounded(report.first_action_after_kill) if run.kill.kind != "none" else None,
            "last_done_s": _rounded(report.last_done_after_kill),
            "problems": report.problems, "machine": machine(),
        }
    finally:
        server.close()
        if spread is not None:
            stop_spread(spread)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roots", type=int, default=20)
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--timeout", type=float, default=240.0)
    options = parser.parse_args()
    baseline: float | None = None
    for name in options.runs.split(","):
        if name not in RUNS:
            parser.error(f"--runs takes {', '.join(RUNS)}, not {name}")
        line = measure(name, options.roots, options.timeout)
        if name == "local":
            baseline = line["total_s"]
        if baseline and line["total_s"]:
            line["total_ratio"] = round(line["total_s"] / baseline, 2)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
