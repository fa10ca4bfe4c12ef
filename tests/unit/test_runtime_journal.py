"""Journal and replay: a complete journal replays without side effects; a changed one is non-determinism."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from grid_local.errors import ArgumentError, NonDeterminismError
from grid_local.runtime import journal
from grid_local.runtime.execution import Completed, Failed, FlowExecution, FlowTask, Suspended
from grid_local.runtime.limits import Limits
from grid_local.runtime.journal import JournalEntry
from grid_local.runtime.memory import MemoryGrid
from grid_local.runtime.sources import DirectorySource

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

pytestmark = pytest.mark.timeout(60)

QUOTA = {"username": "tester", "path": "/local/tester"}


class CountingGrid(MemoryGrid):
    """A MemoryGrid that counts the requests committed to it (each append is a new journal entry)."""

    appends: int = 0

    def append(self, task, entry):
        self.appends += 1
        return super().append(task, entry)


class RefusingPort:
    """A port for pure replay: any new request is a test failure."""

    def append(self, task, entry):
        raise AssertionError(f"replay appended {entry.kind}({entry.args})")

    def wait_result(self, task, seq, timeout):
        raise AssertionError(f"replay waited for entry {seq}")


MAIN = """
load("//lib/child.star", "double")

def _main_impl(fctx):
    t = fctx.actions.now()
    u = fctx.actions.uuid()
    r = fctx.actions.random()
    print("step", fctx.args.n)
    fctx.actions.sleep(1)
    d = double(n = fctx.args.n)
    print("doubled", d)
    return {"t": t, "u": u, "r": r, "d": d}

main = flow(implementation = _main_impl, args = {"n": args.int()})
"""

CHILD = """
def _double_impl(fctx):
    return fctx.args.n * 2

double = flow(implementation = _double_impl, args = {"n": args.int()})
"""


@pytest.fixture
def recorded(flow_project):
    """A flow run once to completion on a counting MemoryGrid."""
    flow_project.write("main.flow", MAIN)
    flow_project.write("lib/child.star", CHILD)
    grid = CountingGrid(DirectorySource(flow_project.root))
    root, outcome = grid.run({"module": "main.flow", "function": "_main_impl"}, {"n": 21})
    assert isinstance(outcome, Completed), outcome
    return grid, root, outcome


def test_first_run_journals_every_action_in_order(recorded):
    grid, root, outcome = recorded
    entries = grid.journals[root]

    assert [e.kind for e in entries] == ["now", "uuid", "random", "print", "sleep", "run", "wait", "print"]
    assert [e.seq for e in entries] == list(range(1, 9))
    assert all(e.answered for e in entries)
    assert all(e.hash == journal.request_hash(e.kind, journal.canonical_json(e.args)) for e in entries)
    assert [e.callsite for e in entries] == [f"main.flow:{n}" for n in (4, 5, 6, 7, 8, 9, 9, 10)]
    assert grid.appends == 8  # the child took no action of its own
    assert outcome.value["d"] == 42
    assert outcome.value["t"] == entries[0].result["value"]
    assert outcome.value["u"] == entries[1].result["value"]


def test_replay_of_a_complete_journal_appends_nothing_and_gives_the_same_result(recorded):
    grid, root, first = recorded
    appends, evaluations = grid.appends, grid.evaluations
    output = grid.output(root)

    again = grid.evaluate(root)

    assert again == first  # same clock, uuid, random and child value: all from the journal
    assert grid.appends == appends
    assert grid.evaluations == evaluations + 1  # the root only; the child is not re-run
    assert grid.output(root) == output == ["step 21", "doubled 42"]  # print is shown once


def test_replay_through_a_port_that_refuses_new_requests(recorded):
    grid, root, first = recorded
    task = FlowTask(root, {"module": "main.flow", "function": "_main_impl"}, {"n": 21}, QUOTA,
                    copy.deepcopy(grid.journals[root]))

    execution = FlowExecution(task, grid.tree, RefusingPort(), Limits())
    outcome = execution.run()

    assert outcome == first
    assert execution.replayed == 8


def test_resume_from_a_partial_journal_replays_the_prefix_then_appends(recorded):
    grid, root, first = recorded
    prefix = copy.deepcopy(grid.journals[root][:5])  # up to and including the sleep
    resumed = CountingGrid(grid.tree)
    flow_id = resumed.start({"module": "main.flow", "function": "_main_impl"}, {"n": 21})
    resumed.journals[flow_id] = prefix

    outcome = resumed.evaluate(flow_id)

    assert isinstance(outcome, Completed)
    assert resumed.appends == 3  # run, wait, print
    assert [e.kind for e in resumed.journals[flow_id][5:]] == ["run", "wait", "print"]
    assert outcome.value == first.value
    assert resumed.output(flow_id) == ["step 21", "doubled 42"]


def test_an_unanswered_request_suspends_the_flow(flow_project):
    """A deferred request without a result: evaluation stops there (resumed later by replay)."""
    flow_project.write("main.flow", """
        print("before")
        fctx().actions.receive()
        print("after")
    """)

    grid, root, outcome = flow_project.run(limits=Limits(suspend_after=0.01))

    assert outcome == Suspended(2)
    assert [e.kind for e in grid.journals[root]] == ["print", "receive"]
    assert grid.output(root) == ["before"]

    grid.journals[root][1].result = journal.ok({"hello": 1})
    again = grid.evaluate(root)

    assert again == Completed(None)
    assert grid.output(root) == ["before", "after"]


def test_recorded_errors_are_returned_again_on_replay(flow_project):
    calls = []

    def http(request):
        calls.append(request)
        return {"ok": False, "value": None, "error": "HTTP 500"}

    flow_project.write("main.flow", """
        r = fctx().actions.http("GET", "https://example.test/", check = False)
        print(r.error)
        fctx().actions.http("GET", "https://example.test/")
    """)
    grid, root, first = flow_project.run(http=http)
    again = grid.evaluate(root)

    assert isinstance(first, Failed) and first.message == "HTTP 500"
    assert again == first
    assert len(calls) == 2  # once per request, never again on replay
    assert grid.output(root) == ["HTTP 500"]


def test_replaying_a_failed_child_keeps_the_chained_traceback(flow_project):
    flow_project.write("main.flow", """
        def _bad_impl(fctx):
            fail("child broke")

        bad = flow(implementation = _bad_impl)

        if __name__ == "__flow__":
            bad()
    """)
    grid, root, first = flow_project.run()
    again = grid.evaluate(root)

    assert isinstance(first, Failed)
    assert "main.flow:2, in _bad_impl" in first.traceback
    assert again == first


def test_golden_journal_of_hello_replays(flow_project):
    """A journal recorded by an earlier version must keep replaying: the prelude's requests are a contract."""
    flow_project.copy_fixture("seed")
    golden = json.loads((FIXTURES / "flows" / "seed" / "hello.journal.json").read_text())
    # Replayed by someone else: the child's value comes from the journal, not from the new quota.
    task = FlowTask("f1", {"module": "hello.flow", "function": None}, {}, {"username": "other", "path": "/local/other"},
                    [JournalEntry.from_json(e) for e in golden])

    execution = FlowExecution(task, DirectorySource(flow_project.root), RefusingPort(), Limits())
    outcome = execution.run()

    assert outcome == Completed(None), outcome
    assert execution.replayed == 3


def tampered(entries, index, kind=None, args=None):
    entries = copy.deepcopy(entries)
    entry = entries[index]
    entry.kind = kind or entry.kind
    entry.args = entry.args if args is None else args
    entry.hash = journal.request_hash(entry.kind, journal.canonical_json(entry.args))
    return entries


def replay(grid, root, entries):
    task = FlowTask(root, {"module": "main.flow", "function": "_main_impl"}, {"n": 21}, QUOTA, entries)
    return FlowExecution(task, grid.tree, RefusingPort(), Limits()).run()


def test_changed_arguments_are_non_determinism_naming_both_requests_and_the_line(recorded):
    grid, root, _ = recorded

    outcome = replay(grid, root, tampered(grid.journals[root], 4, args={"seconds": 60}))

    assert isinstance(outcome, Failed)
    assert outcome.kind == "NonDeterminismError"
    assert outcome.message == (
        "non-determinism at journal entry 5: the journal recorded sleep({\"seconds\":60}) at main.flow:8, "
        "but replaying the script requested sleep({\"seconds\":1}) at main.flow:8"
    )


def test_changed_kind_is_non_determinism(recorded):
    grid, root, _ = recorded

    outcome = replay(grid, root, tampered(grid.journals[root], 1, kind="random", args={}))

    assert isinstance(outcome, Failed)
    assert outcome.kind == "NonDeterminismError"
    assert "journal entry 2" in outcome.message
    assert "the journal recorded random({})" in outcome.message
    assert "replaying the script requested uuid({}) at main.flow:5" in outcome.message


def test_edited_script_is_non_determinism_at_the_edited_line(recorded, flow_project):
    grid, root, _ = recorded
    flow_project.write("main.flow", MAIN.replace('print("step", fctx.args.n)', 'print("step two", fctx.args.n)'))

    outcome = replay(grid, root, copy.deepcopy(grid.journals[root]))

    assert isinstance(outcome, Failed)
    assert outcome.kind == "NonDeterminismError"
    assert 'recorded print({"text":"step 21"}) at main.flow:7' in outcome.message
    assert 'requested print({"text":"step two 21"}) at main.flow:7' in outcome.message


def test_check_replay_is_pure():
    entry = JournalEntry(3, "now", {}, journal.request_hash("now", "{}"), "a.flow:2")
    journal.check_replay(entry, "now", "{}", journal.request_hash("now", "{}"), "a.flow:2")
    with pytest.raises(NonDeterminismError, match=r"entry 3: the journal recorded now\(\{\}\) at a.flow:2, "
                                                  r"but replaying the script requested uuid\(\{\}\) at b.flow:7"):
        journal.check_replay(entry, "uuid", "{}", journal.request_hash("uuid", "{}"), "b.flow:7")


def test_canonical_json_and_check_json():
    assert journal.canonical_json({"b": 1, "a": [1.5, None, "é"]}) == '{"a":[1.5,null,"é"],"b":1}'
    assert journal.check_json({"a": [1, {"b": True}]}, "x") == {"a": [1, {"b": True}]}
    for bad, fragment in [({1: 2}, "non-string key"), ({"a": [float("nan")]}, r"a\[0\] is nan"), (object(), "object")]:
        with pytest.raises(ArgumentError, match=fragment):
            journal.check_json(bad, "the value")
    with pytest.raises(ArgumentError):
        journal.canonical_json({"x": float("inf")})


@pytest.mark.parametrize("call", [
    "takes(q = lambda: 1)",
    'fctx().actions.send("f9", lambda: 1)',
    'fctx().actions.send("f9", {"nested": [1, fctx]})',
])
def test_non_json_arguments_fail_at_the_call_site(flow_project, call):
    flow_project.write("main.flow", f"""
        def _takes_impl(fctx):
            return fctx.args.q

        takes = flow(implementation = _takes_impl)

        def main():
            {call}

        if __name__ == "__flow__":
            main()
    """.replace("{call}", call))

    grid, root, outcome = flow_project.run()

    assert isinstance(outcome, Failed)
    assert outcome.kind == "ArgumentError"
    assert outcome.message.startswith("main.flow:7: ")
    assert "is not JSON-representable" in outcome.message
    assert grid.journals[root] == []


def test_non_json_flow_result_fails_the_child(flow_project):
    flow_project.write("main.flow", """
        def _f_impl(fctx):
            return lambda: 1

        f = flow(implementation = _f_impl)

        def _g_impl(fctx):
            return {1: "int key"}

        g = flow(implementation = _g_impl)

        if __name__ == "__flow__":
            a, b = fctx().actions.wait([fctx().actions.run(f), fctx().actions.run(g)])
            print(a.error)
            print(b.error)
    """)

    grid, root, outcome = flow_project.run()

    assert outcome == Completed(None), outcome
    first, second = grid.output(root)
    assert first.startswith("flow f (f2) failed: the result of flow f is not JSON-representable")
    assert second == "flow g (f3) failed: the result of flow g: value has a non-string key 1"


def test_script_that_stops_short_of_its_journal_is_non_deterministic(tmp_path) -> None:
    """A replay that completes without reaching every recorded action means the script changed."""
    from grid_local.runtime.execution import Failed, FlowExecution, FlowTask
    from grid_local.runtime.limits import Limits
    from grid_local.runtime.memory import MemoryGrid
    from grid_local.runtime.sources import DirectorySource

    script = tmp_path / "short.flow"
    script.write_text("fctx().actions.now()\nfctx().actions.uuid()\n")
    grid = MemoryGrid(DirectorySource(tmp_path))
    flow_id, _ = grid.run({"module": "short.flow", "function": None})
    recorded = list(grid.journals[flow_id])
    script.write_text("fctx().actions.now()\n")
    task = FlowTask(flow_id, {"module": "short.flow", "function": None}, {}, {"username": "u", "path": "/u"}, recorded)
    outcome = FlowExecution(task, DirectorySource(tmp_path), grid, Limits()).run()
    assert isinstance(outcome, Failed) and outcome.kind == "NonDeterminismError"
    assert "entry 2, uuid({})" in outcome.message and "short.flow:2" in outcome.message
