"""Benchmark the Flow DB's two engines in one run: W1-W5 of bench_grid.py on a grid over SQLite and
on one over PostgreSQL (2 workers each, default settings), with the ratio PostgreSQL / SQLite of
each figure; then W3 (200 flows of 10 steps at once) on PostgreSQL with 1, 2 and 4 workers (how
throughput grows with workers). One JSON line per measurement.

PostgreSQL: the server at ``--db postgresql://...`` (its database must exist; each grid's tables
are made there), else a private cluster started from the server binaries in a temporary folder
(as the tests do: tests/postgres_cluster.py) and stopped at the end, a fresh database per grid.

    python bench/bench_engines.py [--db postgresql://USER@HOST:PORT/DB] [--runs 50]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_grid import emit, fanout, latency, machine, sequential, throughput, upload_scripts, worker_killed  # noqa: E402
from flowmetal_cli.client import GridClient  # noqa: E402
from grid_local.home import GridPaths  # noqa: E402
from grid_local.supervisor import start_background, stop_background  # noqa: E402

# (workload, figure compared, higher is better)
FIGURES = [("W1", "p50_ms", False), ("W1", "p95_ms", False), ("W2", "steps_per_s", True),
           ("W3", "flows_per_s", True), ("W4", "seconds", False), ("W5", "kill_to_completion_s", False)]


@contextmanager
def grid(db_url: str | None, workers: int) -> Iterator[tuple[GridClient, GridPaths]]:
    home = Path(tempfile.mkdtemp(prefix="flowmetal-bench-engines-"))
    paths = GridPaths(home, db_url)
    state = start_background(paths, workers=workers, timeout=90)
    client = GridClient(state["url"])
    try:
        yield client, paths
    finally:
        client.close()
        stop_background(paths)
        shutil.rmtree(home, ignore_errors=True)


def workloads(client: GridClient, runs: int) -> dict[str, dict[str, Any]]:
    digests = upload_scripts(client)
    return {
        "W1": latency(client, digests["one.flow"], runs),
        "W2": sequential(client, digests["hundred.flow"], 100),
        "W3": throughput(client, digests["ten.flow"], 200, 10),
        "W4": fanout(client, digests["fanout.flow"]),
        "W5": worker_killed(client, digests["naps.flow"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default=None, help="a PostgreSQL database to use (default: a private cluster)")
    parser.add_argument("--runs", type=int, default=50, help="W1's runs per engine")
    options = parser.parse_args()
    for stop in (signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(stop, lambda *_: sys.exit(1))  # so that `finally` stops the grids and the cluster
    cluster = None
    fresh: Callable[[], str]
    if options.db:
        fresh = lambda: str(options.db)  # noqa: E731
    else:
        from tests.postgres_cluster import start_cluster

        cluster = start_cluster()
        fresh = cluster.fresh_database
    try:
        emit({"bench": "engines", "machine": machine()})
        results: dict[str, dict[str, dict[str, Any]]] = {}
        for engine in ("sqlite", "postgres"):
            with grid(fresh() if engine == "postgres" else None, workers=2) as (client, _):
                results[engine] = workloads(client, options.runs)
            for name, record in results[engine].items():
                emit({"engine": engine, "workload": name, "workers": 2, **record})
        for name, figure, higher_better in FIGURES:
            sqlite, postgres = results["sqlite"][name][figure], results["postgres"][name][figure]
            emit({"workload": name, "figure": figure, "sqlite": sqlite, "postgres": postgres,
                  "postgres_over_sqlite": round(postgres / sqlite, 2) if sqlite else None,
                  "higher_is_better": higher_better})
        scaling = {}
        for workers in (1, 2, 4):
            with grid(fresh(), workers=workers) as (client, _):
                digests = upload_scripts(client)
                scaling[workers] = throughput(client, digests["ten.flow"], 200, 10)
            emit({"engine": "postgres", "workload": "W3", "workers": workers, **scaling[workers],
                  "speedup_over_1_worker": round(scaling[workers]["flows_per_s"] / scaling[1]["flows_per_s"], 2)})
    finally:
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(cluster.root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
