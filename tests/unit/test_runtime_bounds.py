"""Bounds on evaluation (budget, call stack, cancel), [limits] settings, and O(N) evaluation of N actions."""

from __future__ import annotations

import threading
import time
import tomllib

import pytest

from grid_local.runtime.execution import Completed, Failed, FlowExecution, FlowTask
from grid_local.runtime.limits import Limits
from grid_local.runtime.memory import MemoryGrid
from grid_local.runtime.sources import DirectorySource

pytestmark = pytest.mark.timeout(60)

QUOTA = {"username": "tester", "path": "/local/tester"}

SPIN = """
def spin():
    for i in range(2000000000):
        pass

spin()
"""


def test_infinite_loop_stops_at_the_eval_budget(flow_project):
    flow_project.write("main.flow", SPIN)

    started = time.monotonic()
    grid, root, outcome = flow_project.run(limits=Limits(eval_budget=0.5))
    elapsed = time.monotonic() - started

    assert isinstance(outcome, Failed)
    assert outcome.kind == "LimitError"
    assert "evaluation budget exceeded" in outcome.message
    assert "0.5 s" in outcome.message and "eval_budget" in outcome.message
    assert "main.flow:2" in outcome.traceback  # the loop is pointed at
    assert elapsed < 10


def test_infinite_loop_at_top_level_stops_too(flow_project):
    flow_project.write("main.flow", """
        print("start")
        for i in range(2000000000):
            pass
    """)

    grid, root, outcome = flow_project.run(limits=Limits(eval_budget=0.3))

    assert isinstance(outcome, Failed)
    assert "evaluation budget exceeded" in outcome.message
    assert grid.output(root) == ["start"]


def _loop_size_for(flow_project, seconds):
    """How many empty iterations take about ``seconds`` of CPU here (calibrated, so the test is not machine-bound)."""
    flow_project.write("calibrate.flow", "def f():\n    for i in range(300000):\n        pass\nf()\n")
    task = FlowTask("c", {"module": "calibrate.flow", "function": None}, {}, QUOTA, [])
    grid = MemoryGrid(DirectorySource(flow_project.root))
    best = float("inf")
    for _ in range(3):
        started = time.thread_time()
        FlowExecution(task, grid.tree, grid, Limits(eval_budget=30)).run()
        best = min(best, time.thread_time() - started)
    return max(1000, int(300000 * seconds / max(best, 1e-4)))


def test_the_budget_is_per_stretch_between_actions(flow_project):
    """Three stretches of ~40% of the budget each, separated by actions: more than the budget in all, still fine."""
    size = _loop_size_for(flow_project, 0.2)
    flow_project.write("main.flow", f"""
        def work():
            for i in range({size}):
                pass

        work()
        fctx().actions.now()
        work()
        fctx().actions.now()
        work()
        print("done")
    """)

    grid, root, outcome = flow_project.run(limits=Limits(eval_budget=0.5))

    assert outcome == Completed(None), outcome
    assert grid.output(root) == ["done"]


def test_unbounded_recursion_stops_at_the_call_stack_limit(flow_project):
    flow_project.write("main.flow", """
        def down(n):
            return down(n + 1)

        down(0)
    """)

    _, _, outcome = flow_project.run(limits=Limits(max_callstack=50))

    assert isinstance(outcome, Failed)
    assert outcome.kind == "LimitError"
    assert outcome.message == "call stack limit exceeded (50 frames; [limits] max_callstack)"
    assert "main.flow:2" in outcome.traceback


def test_bounded_recursion_within_the_limit_is_fine(flow_project):
    flow_project.write("main.flow", """
        def fact(n):
            return 1 if n <= 1 else n * fact(n - 1)

        print(fact(20))
    """)

    grid, root, outcome = flow_project.run(limits=Limits(max_callstack=50))

    assert outcome == Completed(None), outcome
    assert grid.output(root) == ["2432902008176640000"]


@pytest.mark.parametrize("body", [
    "for i in range(2000000000):\n    pass\n",
    "for i in range(2000000000):\n    fctx().actions.now()\n",  # busy with actions: the budget never runs out
])
def test_cancel_from_another_thread_ends_evaluation(flow_project, body):
    flow_project.write("main.flow", body)
    grid = MemoryGrid(DirectorySource(flow_project.root))
    task = FlowTask("f1", {"module": "main.flow", "function": None}, {}, QUOTA, [])
    grid.journals["f1"] = []
    execution = FlowExecution(task, grid.tree, grid, Limits(eval_budget=30))
    timer = threading.Timer(0.2, execution.cancel, args=("cancelled by the test",))

    started = time.monotonic()
    timer.start()
    try:
        outcome = execution.run()
    finally:
        timer.cancel()

    assert isinstance(outcome, Failed)
    assert outcome.kind == "FlowCancelled"
    assert outcome.message == "cancelled by the test"
    assert time.monotonic() - started < 10


def test_limits_from_settings_reads_the_limits_table():
    settings = tomllib.loads('[project]\nname = "x"\n\n[limits]\neval_budget = 2\nmax_callstack = 64\n')

    limits = Limits.from_settings(settings)

    assert limits == Limits(eval_budget=2.0, max_callstack=64, suspend_after=Limits().suspend_after)
    assert isinstance(limits.eval_budget, float)
    assert Limits.from_settings({}) == Limits()
    assert Limits.from_settings(tomllib.loads("[limits]\nsuspend_after = 0.5\n")).suspend_after == 0.5


def test_limits_from_settings_apply_to_evaluation(flow_project):
    flow_project.write("main.flow", "def d(n):\n    return d(n + 1)\n\nd(0)\n")
    limits = Limits.from_settings(tomllib.loads("[limits]\nmax_callstack = 30\n"))

    _, _, outcome = flow_project.run(limits=limits)

    assert isinstance(outcome, Failed)
    assert "(30 frames" in outcome.message


# -- O(N): the fast path never replays ----------------------------------------------------------


class CountingGrid(MemoryGrid):
    appends: int = 0

    def append(self, task, entry):
        self.appends += 1
        return super().append(task, entry)


@pytest.mark.parametrize("n", [1, 10, 300])
def test_n_sequential_actions_take_one_evaluation_and_n_appends(flow_project, n):
    flow_project.write("main.flow", f"""
        def main():
            for i in range({n}):
                fctx().actions.now()

        main()
    """)
    grid = CountingGrid(DirectorySource(flow_project.root))

    root, outcome = grid.run({"module": "main.flow", "function": None})

    assert outcome == Completed(None)
    assert grid.evaluations == 1
    assert grid.appends == n
    assert len(grid.journals[root]) == n


def test_n_sequential_child_flows_evaluate_the_root_once(flow_project):
    flow_project.write("main.flow", """
        def _one_impl(fctx):
            return fctx.args.i

        one = flow(implementation = _one_impl)

        if __name__ == "__flow__":
            total = 0
            for i in range(50):
                total += one(i = i)
            print(total)
    """)
    grid = CountingGrid(DirectorySource(flow_project.root))

    root, outcome = grid.run({"module": "main.flow", "function": None})

    assert outcome == Completed(None)
    assert grid.output(root) == ["1225"]
    assert grid.evaluations == 1 + 50  # the root once, each child once
    assert grid.appends == 50 * 2 + 1  # run + wait per child, one print


class _AnsweringPort:
    """Answers every action at once (no grid): what the test measures is the execution itself."""

    def append(self, task, entry):
        return {"ok": True, "value": 1}

    def wait_result(self, task, seq, timeout):
        return None


def test_a_finished_execution_is_freed():
    """A worker runs millions of flows: none may outlive its run with its task and journal. (The
    evaluation options hold a callback into the execution, a cycle the collector cannot see.)"""
    import gc
    import weakref

    from grid_local.runtime.sources import MappingSource

    tree = MappingSource({"main.flow": "def _step(fctx):\n    fctx.actions.now()\n    return 1\n\n"
                                       "step = flow(implementation = _step)\n"})
    refs = []
    for i in range(20):
        task = FlowTask(flow_id=f"f{i}", entry={"module": "main.flow", "function": "_step"}, args={},
                        quota=QUOTA, journal=[])
        execution = FlowExecution(task, tree, _AnsweringPort(), Limits())
        assert execution.run() == Completed(1)
        refs.append(weakref.ref(execution))
        del execution
    gc.collect()
    assert [ref for ref in refs if ref() is not None] == []
