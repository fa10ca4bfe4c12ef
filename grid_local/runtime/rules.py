"""What each action the Flow DB answers means: one pure set of rules for every journal backend.

The Flow DB (``grid_local/db``) and the in-memory grid the unit tests use
(``grid_local/runtime/memory.py``) both answer ``run``, ``wait``, ``send``, ``receive`` and
``sleep`` through these functions, so the two cannot disagree on a result or its wording
(``tests/unit/test_rules_parity.py`` runs one table of flows through both). The backends only
find the facts (which children ended, which message is next); the answers are made here.

Results are recorded at most once: the first answer to an entry stands (``first_answer``; on
the Flow DB, ``UPDATE ... WHERE result IS NULL``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from grid_local.runtime.journal import err, ok

FINISHED = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Child:
    """What a ``wait`` needs to know about a child flow."""

    flow_id: str
    name: str
    status: str
    result: Any = None
    error: dict[str, Any] | None = None


# -- run ----------------------------------------------------------------------------------------

def child_entry(args: dict[str, Any]) -> dict[str, Any]:
    """Where a child started by ``run`` begins: the flow function, and the resources it declares."""
    spec = args["flow"]
    return {"module": spec["module"], "function": spec["function"], "resources": args.get("resources") or {}}


def child_name(args: dict[str, Any]) -> str:
    return str(args["flow"]["name"])


def child_args(args: dict[str, Any]) -> dict[str, Any]:
    return dict(args.get("args") or {})


def started(child_id: str, args: dict[str, Any]) -> dict[str, Any]:
    """The answer to ``run``: the task a later ``wait`` names."""
    return ok({"flow_id": child_id, "flow": child_name(args)})


def started_id(answer: dict[str, Any]) -> str:
    """The child flow id in a ``run``'s answer."""
    return str(answer["value"]["flow_id"])


# -- wait ---------------------------------------------------------------------------------------

def waited_ids(args: dict[str, Any]) -> list[str]:
    """The child flow ids a ``wait`` names (anything else in its list is answered as not a task)."""
    tasks = args.get("tasks") or []
    return [t["flow_id"] for t in tasks if isinstance(t, dict) and isinstance(t.get("flow_id"), str)]


def child_outcome(child: Child) -> dict[str, Any] | None:
    """One child's result as its waiting parent sees it; None while it has not ended."""
    if child.status == "completed":
        return ok(child.result)
    if child.status in ("failed", "cancelled"):
        error = child.error or {}
        verb = "failed" if child.status == "failed" else "was cancelled"
        return err(f"flow {child.name} ({child.flow_id}) {verb}: {error.get('message', '')}",
                   error.get("traceback", ""))
    return None


def wait_outcome(args: dict[str, Any], children: Mapping[str, Child], timed_out: bool) -> dict[str, Any] | None:
    """The answer to a ``wait``: every task's result in the order given, or None while one is still
    running (unless the wait timed out: then each unfinished child reads as a timeout)."""
    results = []
    for task in args.get("tasks") or []:
        child_id = task.get("flow_id") if isinstance(task, dict) else None
        child = children.get(child_id) if isinstance(child_id, str) else None
        if child is None:
            results.append(err(f"wait: {task!r} is not a task"))
            continue
        outcome = child_outcome(child)
        if outcome is not None:
            results.append(outcome)
        elif timed_out:
            results.append(err(f"timeout waiting for flow {child.name} ({child.flow_id})"))
        else:
            return None
    return ok(results)


# -- send and receive ---------------------------------------------------------------------------

def inbox_of(args: dict[str, Any]) -> str:
    return str(args.get("inbox", "_stdin"))


def sent() -> dict[str, Any]:
    return ok(None)


def no_such_flow(flow_id: Any, sender_quota: str) -> dict[str, Any]:
    """The answer to a ``send`` to a flow the grid does not know, or that the sender may not write
    to: the two read the same, so a flow cannot probe for flows outside its authority."""
    return err(f"send: no flow {flow_id} that this flow may write to "
               f"(a flow sends only within its quota node {sender_quota} or its own flow tree)")


def received(value: Any) -> dict[str, Any]:
    return ok(value)


def receive_timed_out(args: dict[str, Any]) -> dict[str, Any]:
    return err(f"timeout: no message on inbox {inbox_of(args)} within {args.get('timeout')} s")


# -- timers -------------------------------------------------------------------------------------

def deadline(kind: str, args: dict[str, Any], now: float) -> float | None:
    """When an unanswered request ends by itself: a sleep wakes, a receive or wait times out."""
    if kind == "sleep":
        return now + max(float(args.get("seconds") or 0), 0.0)
    if kind in ("receive", "wait") and args.get("timeout") is not None:
        return now + max(float(args["timeout"]), 0.0)
    return None


def slept() -> dict[str, Any]:
    return ok(None)


def at_deadline(kind: str, args: dict[str, Any], children: Mapping[str, Child]) -> dict[str, Any]:
    """The answer given when a request's deadline passed (``children``: those a ``wait`` names)."""
    if kind == "sleep":
        return slept()
    if kind == "wait":
        return wait_outcome(args, children, timed_out=True) or err("timeout")
    return receive_timed_out(args)


# -- results ------------------------------------------------------------------------------------

def first_answer(recorded: dict[str, Any] | None) -> bool:
    """Whether a new answer may be recorded: only while none is (a result is recorded at most once)."""
    return recorded is None


def injected_failure(kind: str) -> dict[str, Any]:
    return err(f"injected failure (flowmetal failure injection on {kind})")
