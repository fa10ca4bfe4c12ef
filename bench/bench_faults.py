"""Recovery from each kind of kill: one JSON line per process kind, on a fresh local grid each.

The workload is the fault matrix's (tests/integration/fault_workload.py): 30 root flows with
child flows, sleeps, receives, HTTP calls to a slow loopback server and a workspace resource.
Once it is busy, one process kind is SIGKILLed (for "supervisor" and "everything" the grid is
started again, as a user would), the remaining messages are sent, and the run measures:

- ``first_action_s``: from the kill to the first journal request any flow makes after it;
- ``first_served_s``: from the kill to the first work of what replaced the killed kind (an answer
  of the killed connector's kind, a request written by a new worker, a message delivered after a
  Client API kill, a request after a Worker API kill or after the grid restarted);
- ``last_done_s``: from the kill to the last root flow done (null if one never finished);
- ``grid_up_s``: for a grid restart, from the kill until ``grid up`` returned (the old processes
  gone, the new grid ready);
- ``declared_after_restart_s``: after a grid restart, from the new grid being up until every
  request the old grid left in flight was answered (declared interrupted);

and counts the broken promises (lost or wrong flows, requests performed twice: ``problems``).
The "none" line is the same workload with no kill: its ``last_done_s`` is the baseline.

    python bench/bench_faults.py [--kinds worker,supervisor] [--roots 30] [--timeout 90]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grid_local.home import GridPaths, pid_alive  # noqa: E402
from grid_local.supervisor import stop_background  # noqa: E402
from tests.integration.fault_workload import KINDS, FaultRun, SlowCountingServer  # noqa: E402


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 1), "python": platform.python_version(),
            "platform": platform.platform()}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def stop(paths: GridPaths) -> None:
    """Stop the grid, and every process it listed if one lingers."""
    state = paths.read_state()
    try:
        stop_background(paths, timeout=10)
    finally:
        for process in (state or {}).get("processes", []):
            if pid_alive(process.get("pid")):
                os.kill(process["pid"], signal.SIGKILL)


def measure(kind: str | None, roots: int, timeout: float) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="flowmetal-bench-faults-"))
    paths = GridPaths(home / "home")
    project = home / "project"
    project.mkdir()
    (project / "flowmetal.toml").write_text('[project]\nname = "bench-faults"\n')
    server = SlowCountingServer(delay=0.5)
    run = None
    try:
        run = FaultRun(paths, project, server, roots=roots)
        run.start()
        run.inflict(kind)
        run.wait_done(timeout)
        report = run.report()
        kill = report.kill
        return {
            "kill": kind or "none", "roots": roots, "flows": report.flows,
            "first_action_s": _rounded(report.first_action_after_kill),
            "first_served_s": _rounded(report.first_served_after_kill),
            "last_done_s": _rounded(report.last_done_after_kill),
            "grid_up_s": _rounded(kill.restarted_at - kill.at if kill and kill.restarted_at else None),
            "declared_after_restart_s": _rounded(kill.declared_after_restart if kill else None),
            "left_in_flight": len(kill.left_in_flight) if kill else 0,
            "interrupted": report.interrupted, "problems": len(report.problems),
            "first_problem": report.problems[0] if report.problems else None,
        }
    finally:
        if run is not None:
            run.close()
        server.close()
        stop(paths)
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kinds", default="none," + ",".join(KINDS),
                        help=f"comma-separated, from: none, {', '.join(KINDS)}")
    parser.add_argument("--roots", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds after the kill to wait for the flows")
    options = parser.parse_args()
    kinds = [k.strip() for k in options.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k != "none" and k not in KINDS]
    if unknown:
        parser.error(f"unknown kinds: {', '.join(unknown)}")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: sys.exit(1))  # so that `finally` stops the grid
    for kind in kinds:
        began = time.monotonic()
        record = measure(None if kind == "none" else kind, options.roots, options.timeout)
        record["run_s"] = round(time.monotonic() - began, 1)
        print(json.dumps({**record, "machine": machine()}), flush=True)


if __name__ == "__main__":
    main()
