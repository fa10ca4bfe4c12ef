"""The seed examples (DESIGN.md section 1) run end to end on the in-process MemoryGrid."""

from __future__ import annotations

import pytest

from grid_local.runtime.execution import Completed

pytestmark = pytest.mark.timeout(60)


def test_hello_prints_the_greeting_and_journals_run_wait_print(flow_project):
    flow_project.copy_fixture("seed")

    grid, root, outcome = flow_project.run("hello.flow")

    assert outcome == Completed(None)
    assert grid.output(root) == ["Hello from Flowmetal, tester!"]
    entries = grid.journals[root]
    assert [e.kind for e in entries] == ["run", "wait", "print"]
    assert [e.seq for e in entries] == [1, 2, 3]
    assert all(e.answered for e in entries)
    # The run names the child flow by its implementation; the wait's result is the child's value.
    child_id = entries[0].result["value"]["flow_id"]
    assert entries[0].args["flow"]["name"] == "whoami"
    assert entries[1].args["tasks"] == [{"flow_id": child_id, "flow": "whoami"}]
    assert entries[1].result["value"] == [{"ok": True, "value": "tester", "error": None}]
    assert grid.outcomes[child_id] == Completed("tester")
    # Every entry points at the user's line that asked for it, not at the prelude.
    assert {e.callsite for e in entries} == {"hello.flow:9"}


def test_parallel_example_runs_analyze_then_save_and_report(flow_project):
    flow_project.copy_fixture("seed")

    grid, root, outcome = flow_project.run("parallel.flow")

    assert outcome == Completed(None), outcome
    assert grid.output(root) == ["saved 8 words", "report for tester: the, and"]
    kinds = [e.kind for e in grid.journals[root]]
    # analyze() is run + wait; save and report are started together and awaited by one wait.
    assert kinds == ["run", "wait", "run", "run", "wait", "print", "print"]
    both = grid.journals[root][4]
    started = [grid.journals[root][2].result["value"], grid.journals[root][3].result["value"]]
    assert both.args["tasks"] == started
    assert [grid.names[t["flow_id"]] for t in started] == ["save", "report"]
    analysis = grid.outcomes[grid.journals[root][0].result["value"]["flow_id"]]
    assert analysis == Completed({"words": 8, "user": "tester", "top": ["the", "and"]})


def test_child_flows_are_not_root_flows(flow_project):
    """A module evaluated for a child flow runs with its own path as __name__, so the entry block is skipped."""
    flow_project.copy_fixture("seed")

    grid, root, _ = flow_project.run("hello.flow")

    child_id = grid.journals[root][0].result["value"]["flow_id"]
    assert grid.journals[child_id] == []  # no nested run/wait/print from a re-run of hello()
