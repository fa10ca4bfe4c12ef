"""Flowmetal beside DBOS Transact on the same workloads, in one run: ratios, not absolute times.

These machines are shared and noisy, so figures from different runs never compare. This runs the
DBOS driver (in-process on SQLite: DBOS's own fastest shape) and ``bench/bench_grid.py`` one after
the other, ``--rounds`` times, and prints one JSON line per round with Flowmetal's figure over
DBOS's for each workload, then a summary line with the median of each ratio over the rounds.

The DBOS driver lives with the peer benchmarks (``../shared/peers`` beside this checkout; build its
environment first with ``bash ../shared/peers/setup.sh``):

    python bench/bench_peers.py [--rounds 3] [--peers ../shared/peers]

A ratio under 1 means Flowmetal took less time (latency) or, for ``*_per_s``, did less work per
second: each line says which way is better.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# (name, Flowmetal workload and field, DBOS workload/variant and field, better, target)
COMPARISONS: list[tuple[str, tuple[str, str], tuple[str, str], str, float | None]] = [
    ("W1 p50, action step / DBOS direct call", ("W1", "p50_ms"), ("W1:direct_call", "p50_ms"), "lower", 0.8),
    ("W1 p95, action step / DBOS direct call", ("W1", "p95_ms"), ("W1:direct_call", "p95_ms"), "lower", 1.0),
    ("W1 p50, child-flow step / DBOS start_workflow+get_result", ("W1c", "p50_ms"),
     ("W1:start_workflow+get_result", "p50_ms"), "lower", 1.0),
    ("W2 steps/s, action steps / DBOS", ("W2", "steps_per_s"), ("W2", "steps_per_s"), "higher", None),
    ("W2 steps/s, child-flow steps / DBOS", ("W2c", "steps_per_s"), ("W2", "steps_per_s"), "higher", 1.0),
    ("W3 flows/s, action steps / DBOS", ("W3", "flows_per_s"), ("W3", "workflows_per_s"), "higher", None),
    ("W3 flows/s, child-flow steps / DBOS", ("W3c", "flows_per_s"), ("W3", "workflows_per_s"), "higher", 1.0),
    ("W4 seconds, 100 children / DBOS child workflows", ("W4", "seconds"), ("W4:child_workflows", "total_s"), "lower", None),
    ("W5 kill to completion / DBOS restart to completion", ("W5", "kill_to_completion_s"),
     ("W5", "restart_to_complete_s"), "lower", None),
]


def run_dbos(peers: Path, python: str, workdir: Path) -> dict[str, dict[str, Any]]:
    out = workdir / "dbos.jsonl"
    subprocess.run([python, str(peers / "dbos_bench.py"), "--mode", "inproc", "--workdir", str(workdir),
                    "--out", str(out)], check=True, stdout=subprocess.DEVNULL, timeout=900)
    records: dict[str, dict[str, Any]] = {}
    for line in out.read_text().splitlines():
        record = json.loads(line)
        key = record["workload"] + (f":{record['variant']}" if record["workload"] in ("W1", "W4") else "")
        records[key] = record
    return records


def run_flowmetal(workers: int) -> dict[str, dict[str, Any]]:
    done = subprocess.run([sys.executable, str(HERE / "bench_grid.py"), "--workers", str(workers),
                           "--only", "W1,W1c,W2,W2c,W3,W3c,W4,W5"],
                          check=True, capture_output=True, text=True, timeout=1800)
    return {r["workload"]: r for r in map(json.loads, done.stdout.splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--peers", type=Path, default=HERE.parent.parent / "shared" / "peers")
    parser.add_argument("--python", default=os.path.join(os.environ.get("PEERS_VENV", "/tmp/peers-venv"), "bin", "python"),
                        help="the peers' venv interpreter (setup.sh builds it; PEERS_VENV moves it)")
    options = parser.parse_args()
    if not (options.peers / "dbos_bench.py").exists() or not Path(options.python).exists():
        sys.exit(f"no DBOS driver at {options.peers} or no interpreter {options.python}: "
                 "run bash ../shared/peers/setup.sh first (or pass --peers/--python)")
    ratios: dict[str, list[float]] = {name: [] for name, *_ in COMPARISONS}
    memory: list[float] = []
    for number in range(1, options.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="flowmetal-peers-") as workdir:
            dbos = run_dbos(options.peers, options.python, Path(workdir))
        ours = run_flowmetal(options.workers)
        round_ratios = {}
        for name, (workload, field), (peer, peer_field), better, target in COMPARISONS:
            if workload in ours and peer in dbos:
                ratio = ours[workload][field] / dbos[peer][peer_field]
                round_ratios[name] = {"flowmetal": ours[workload][field], "dbos": dbos[peer][peer_field],
                                      "ratio": round(ratio, 2), "better": better, "target": target}
                ratios[name].append(ratio)
        memory.append(ours["memory"]["peak_pss_sum_mib"])
        print(json.dumps({"round": number, "ratios": round_ratios,
                          "flowmetal_peak_pss_mib": ours["memory"]["peak_pss_sum_mib"],
                          "dbos_peak_rss_mib": dbos.get("summary", {}).get("worker_peak_rss_mb"),
                          "hops_W1": ours["W1"].get("hops"), "hops_W1c": ours["W1c"].get("hops"),
                          "cores": os.cpu_count(), "load_1min": os.getloadavg()[0]}), flush=True)
    summary = {name: {"median_ratio": round(statistics.median(values), 2), "rounds": len(values),
                      "target": next(t for n, *_, t in COMPARISONS if n == name)}
               for name, values in ratios.items() if values}
    print(json.dumps({"summary": summary, "flowmetal_peak_pss_mib_max": max(memory), "cores": os.cpu_count()}),
          flush=True)


if __name__ == "__main__":
    main()
