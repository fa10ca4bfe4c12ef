"""An in-process journal port: actions answered on the spot, child flows run inline.

For exercising the runtime without a grid (runtime tests and the replay benchmark). It performs
``sleep`` as zero-time and ``http`` through a caller-supplied function; everything else is answered
the way the Flow DB would answer it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from grid_local.runtime import journal
from grid_local.runtime.execution import Completed, Failed, FlowExecution, FlowTask, Limits, Outcome
from grid_local.runtime.journal import JournalEntry
from grid_local.runtime.sources import SourceTree


@dataclass
class MemoryGrid:
    tree: SourceTree
    limits: Limits = field(default_factory=Limits)
    http: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    journals: dict[str, list[JournalEntry]] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    evaluations: int = 0
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _entries: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)

    def start(self, entry: dict[str, Any], args: dict[str, Any] | None = None, name: str = "") -> str:
        flow_id = f"f{next(self._ids)}"
        self.journals[flow_id] = []
        self.names[flow_id] = name or entry["module"]
        self._entries[flow_id] = (entry, args or {})
        return flow_id

    def evaluate(self, flow_id: str) -> Outcome:
        entry, args = self._entries[flow_id]
        task = FlowTask(flow_id, entry, args, {"username": "tester", "path": "/local/tester"},
                        list(self.journals[flow_id]), name=self.names[flow_id])
        self.evaluations += 1
        outcome = FlowExecution(task, self.tree, self, self.limits).run()
        self.outcomes[flow_id] = outcome
        return outcome

    def run(self, entry: dict[str, Any], args: dict[str, Any] | None = None) -> tuple[str, Outcome]:
        flow_id = self.start(entry, args)
        return flow_id, self.evaluate(flow_id)

    def output(self, flow_id: str) -> list[str]:
        return [e.args["text"] for e in self.journals[flow_id] if e.kind == "print"]

    # -- JournalPort ------------------------------------------------------------------------

    def append(self, task: FlowTask, entry: JournalEntry) -> dict[str, Any] | None:
        records = self.journals[task.flow_id]
        assert entry.seq == len(records) + 1, "journal append out of order"
        records.append(entry)
        if entry.result is not None:
            return None
        if entry.kind == "run":
            spec = entry.args["flow"]
            child = self.start({"module": spec["module"], "function": spec["function"],
                                "resources": entry.args.get("resources") or {}}, entry.args["args"], spec["name"])
            entry.result = journal.ok({"flow_id": child, "flow": spec["name"]})
        elif entry.kind == "wait":
            results = []
            for task_ref in entry.args["tasks"]:
                child_id = task_ref["flow_id"]
                outcome = self.outcomes.get(child_id) or self.evaluate(child_id)
                if isinstance(outcome, Completed):
                    results.append(journal.ok(outcome.value))
                elif isinstance(outcome, Failed):
                    results.append(journal.err(f"flow {self.names[child_id]} failed: {outcome.message}", outcome.traceback))
            entry.result = journal.ok(results)
        elif entry.kind == "sleep":
            entry.result = journal.ok(None)
        elif entry.kind == "http" and self.http is not None:
            entry.result = self.http(entry.args)
        elif entry.kind == "send":
            entry.result = journal.ok(None)
        else:
            return None
        return entry.result

    def wait_result(self, task: FlowTask, seq: int, timeout: float) -> dict[str, Any] | None:
        return self.journals[task.flow_id][seq - 1].result
