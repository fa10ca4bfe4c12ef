"""Runtime benchmark: sequential actions per second, evaluations per action, and resume-by-replay time.

Run as ``python bench/bench_runtime.py [--actions N] [--repeat R]``; prints one JSON object per line,
each with a ``machine`` field (nproc, Python and starlark-pyo3 versions).
Everything runs in process on MemoryGrid (no grid, no SQLite), so this measures the interpreter,
the prelude and the journal bookkeeping only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grid_local.runtime.execution import Completed, FlowExecution, FlowTask  # noqa: E402
from grid_local.runtime.limits import Limits  # noqa: E402
from grid_local.runtime.memory import MemoryGrid  # noqa: E402
from grid_local.runtime.sources import DirectorySource  # noqa: E402

FLOW = """
def main():
    for i in range({n}):
        fctx().actions.now()

if __name__ == "__flow__":
    main()
"""


class RefusingPort:
    """Resume with a complete journal must not commit anything new."""

    def append(self, task, entry):
        raise AssertionError("replay appended a new entry")

    def wait_result(self, task, seq, timeout):
        raise AssertionError("replay waited for a result")


def emit(record: dict) -> None:
    print(json.dumps({**record, "machine": MACHINE}), flush=True)


def machine() -> dict:
    try:
        starlark_version = metadata.version("starlark-pyo3")
    except metadata.PackageNotFoundError:
        starlark_version = "unknown"
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "starlark_pyo3": starlark_version,
    }


MACHINE: dict = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=1000, help="actions in the benchmarked flow")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (the median is reported)")
    options = parser.parse_args()
    n = options.actions
    MACHINE.update(machine())

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "flowmetal.toml").write_text("")
        (root / "bench.flow").write_text(FLOW.format(n=n))
        tree = DirectorySource(root)
        entry = {"module": "bench.flow", "function": None}

        run_times, per_action, journal = [], [], []
        for _ in range(options.repeat):
            grid = MemoryGrid(tree, limits=Limits())
            started = time.perf_counter()
            flow_id, outcome = grid.run(entry)
            run_times.append(time.perf_counter() - started)
            assert isinstance(outcome, Completed), outcome
            assert len(grid.journals[flow_id]) == n
            per_action.append(grid.evaluations / n)
            journal = grid.journals[flow_id]
        seconds = statistics.median(run_times)
        emit({
            "bench": "sequential_actions",
            "actions": n,
            "seconds": round(seconds, 4),
            "actions_per_second": round(n / seconds, 1),
            "evaluations": round(per_action[-1] * n),
            "evaluations_per_action": per_action[-1],
            "runs": options.repeat,
        })

        resume_times = []
        for _ in range(options.repeat):
            task = FlowTask("f1", entry, {}, {"username": "bench", "path": "/local/bench"}, list(journal))
            execution = FlowExecution(task, tree, RefusingPort(), Limits())
            started = time.perf_counter()
            outcome = execution.run()
            resume_times.append(time.perf_counter() - started)
            assert isinstance(outcome, Completed), outcome
            assert execution.replayed == n
        seconds = statistics.median(resume_times)
        emit({
            "bench": "resume_by_replay",
            "journal_entries": n,
            "seconds": round(seconds, 4),
            "entries_per_second": round(n / seconds, 1),
            "runs": options.repeat,
        })


if __name__ == "__main__":
    main()
