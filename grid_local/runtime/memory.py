"""An in-process journal port: actions answered on the spot, child flows run inline.

For exercising the runtime without a grid (runtime tests and the replay benchmark). It performs
``sleep`` as zero-time and ``http`` through a caller-supplied function; everything else is answered
by the same rules as the Flow DB's (``runtime/rules.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from grid_local.runtime import rules
from grid_local.runtime.execution import Completed, Failed, FlowExecution, FlowTask, Outcome
from grid_local.runtime.limits import Limits
from grid_local.runtime.journal import JournalEntry
from grid_local.runtime.sources import SourceTree


QUOTA = {"username": "tester", "path": "/local/tester"}
"""Who every flow in memory runs as."""


@dataclass
class MemoryGrid:
    tree: SourceTree
    limits: Limits = field(default_factory=Limits)
    http: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    journals: dict[str, list[JournalEntry]] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    inboxes: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    """Messages sent and not yet received, by (flow id, inbox)."""
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
        task = FlowTask(flow_id, entry, args, dict(QUOTA),
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

    def child(self, flow_id: str) -> rules.Child:
        """A child flow as a ``wait`` sees it (evaluated inline the first time it is waited on)."""
        outcome = self.outcomes.get(flow_id) or self.evaluate(flow_id)
        name = self.names[flow_id]
        if isinstance(outcome, Completed):
            return rules.Child(flow_id, name, "completed", result=outcome.value)
        if isinstance(outcome, Failed):
            return rules.Child(flow_id, name, "failed", error={"message": outcome.message, "traceback": outcome.traceback})
        return rules.Child(flow_id, name, "waiting")

    # -- JournalPort ------------------------------------------------------------------------

    def append(self, task: FlowTask, entry: JournalEntry) -> dict[str, Any] | None:
        records = self.journals[task.flow_id]
        assert entry.seq == len(records) + 1, "journal append out of order"
        records.append(entry)
        if entry.result is not None:
            return None
        result = self.answer(task.flow_id, entry)
        if result is not None and rules.first_answer(entry.result):
            entry.result = result
        return entry.result

    def answer(self, flow_id: str, entry: JournalEntry) -> dict[str, Any] | None:
        """What the Flow DB would answer in the append's transaction (sleep takes no time here)."""
        args = entry.args
        if entry.kind == "run":
            child = self.start(rules.child_entry(args), rules.child_args(args), rules.child_name(args))
            return rules.started(child, args)
        if entry.kind == "wait":
            ids = [i for i in rules.waited_ids(args) if i in self.journals]
            return rules.wait_outcome(args, {i: self.child(i) for i in ids}, timed_out=False)
        if entry.kind == "sleep":
            return rules.slept()
        if entry.kind == "send":
            if args["flow_id"] not in self.journals:
                return rules.no_such_flow(args["flow_id"], QUOTA["path"])
            self.inboxes.setdefault((args["flow_id"], rules.inbox_of(args)), []).append(args.get("value"))
            return rules.sent()
        if entry.kind == "receive":
            waiting = self.inboxes.get((flow_id, rules.inbox_of(args)))
            return rules.received(waiting.pop(0)) if waiting else None
        if entry.kind == "http" and self.http is not None:
            return self.http(args)
        return None

    def wait_result(self, task: FlowTask, seq: int, timeout: float) -> dict[str, Any] | None:
        return self.journals[task.flow_id][seq - 1].result
