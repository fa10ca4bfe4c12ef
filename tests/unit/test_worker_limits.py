"""[limits] from flowmetal.toml within the grid's maxima, worker settings, and evaluation slots."""

from __future__ import annotations

import threading
import time

import pytest

from grid_local.errors import BundleError
from grid_local.runtime.execution import Failed
from grid_local.runtime.limits import GRID_MAXIMA, Limits
from grid_local.worker.settings import WorkerSettings
from grid_local.worker.slots import Slots


def test_a_bundle_lowers_limits_but_cannot_raise_them_above_the_grids_maxima() -> None:
    maxima = Limits(eval_budget=5.0, max_callstack=200, suspend_after=30.0)

    lowered = Limits.from_settings({"limits": {"eval_budget": 0.5, "max_callstack": 40}}, maxima)
    raised = Limits.from_settings({"limits": {"eval_budget": 1e9, "max_callstack": 100000000}}, maxima)

    assert (lowered.eval_budget, lowered.max_callstack, lowered.capped) == (0.5, 40, ())
    assert (raised.eval_budget, raised.max_callstack) == (5.0, 200)
    assert raised.capped == ("eval_budget", "max_callstack")
    assert raised.hint("eval_budget", "--max-eval-budget") == (
        "[limits] eval_budget, capped at the grid's maximum: grid up --max-eval-budget")
    assert Limits.from_settings({}, GRID_MAXIMA) == Limits()


@pytest.mark.parametrize(("section", "message"), [
    ({"eval_budget": "abc"}, "flowmetal.toml: [limits] eval_budget must be a number, got 'abc'"),
    ({"eval_budget": True}, "flowmetal.toml: [limits] eval_budget must be a number, got True"),
    ({"suspend_after": -1}, "flowmetal.toml: [limits] suspend_after must be a positive number of seconds, got -1"),
    ({"max_callstack": 2.5}, "flowmetal.toml: [limits] max_callstack must be a whole number, got 2.5"),
    ({"max_callstack": 0}, "flowmetal.toml: [limits] max_callstack must be at least 1, got 0"),
    ({"eval_budgett": 1}, "flowmetal.toml: [limits] has no setting 'eval_budgett' "
                          "(known: eval_budget, max_callstack, suspend_after, memory_mib)"),
    ({"memory_mib": 2.5}, "flowmetal.toml: [limits] memory_mib must be a whole number, got 2.5"),
    ({"memory_mib": 0}, "flowmetal.toml: [limits] memory_mib must be at least 1, got 0"),
    ({"memory_mib": "1G"}, "flowmetal.toml: [limits] memory_mib must be a whole number, got '1G'"),
])
def test_a_bad_limit_is_refused_naming_the_setting_and_the_value(section: dict[str, object], message: str) -> None:
    with pytest.raises(BundleError) as refused:
        Limits.from_settings({"limits": section})
    assert str(refused.value) == message


def test_a_flow_hitting_a_capped_budget_is_told_where_the_cap_comes_from(flow_project) -> None:  # type: ignore[no-untyped-def]
    flow_project.write("main.flow", "n = 0\nfor i in range(2000000000):\n    n += i\n")
    limits = Limits.from_settings({"limits": {"eval_budget": 100}}, Limits(eval_budget=0.3))

    _, _, outcome = flow_project.run(limits=limits)

    assert isinstance(outcome, Failed)
    assert outcome.message == ("evaluation budget exceeded: more than 0.3 s of evaluation without an action "
                               "([limits] eval_budget, capped at the grid's maximum: grid up --max-eval-budget)")


def test_worker_settings_round_trip_through_the_command_line() -> None:
    import argparse

    settings = WorkerSettings(slots=3, max_waiting=7, memory_mib=300, max_eval_budget=2.5, max_callstack=500,
                              max_suspend_after=40)
    parser = argparse.ArgumentParser()
    WorkerSettings.add_arguments(parser)

    assert WorkerSettings.from_options(parser.parse_args(settings.argv())) == settings
    assert settings.maxima == Limits(eval_budget=2.5, max_callstack=500, suspend_after=40, memory_mib=300)
    assert WorkerSettings(max_callstack=100000).stack_bytes >= 100000 * 400


def test_a_waiting_flow_gives_its_slot_back_and_takes_one_again_before_new_claims() -> None:
    slots = Slots(capacity=1, max_waiting=2)
    slots.take()
    assert slots.free() == 0

    assert slots.start_waiting()  # the one evaluating flow waits: the worker may claim another
    assert slots.free() == 1
    slots.take()

    woke = threading.Event()

    def result_arrives() -> None:
        slots.stop_waiting()
        woke.set()

    waiter = threading.Thread(target=result_arrives)
    waiter.start()
    deadline = time.monotonic() + 5
    while slots.counts()["queued"] != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slots.counts() == {"evaluating": 1, "waiting": 0, "queued": 1}
    assert slots.free() == -1 and not woke.is_set()  # it waits for the slot, and no claim goes first

    slots.give_back()
    waiter.join(5)
    assert woke.is_set() and slots.counts() == {"evaluating": 1, "waiting": 0, "queued": 0}


def test_past_max_waiting_a_flow_that_starts_to_wait_keeps_its_slot_to_suspend() -> None:
    slots = Slots(capacity=4, max_waiting=1)
    slots.take()
    slots.take()

    assert slots.start_waiting()
    assert not slots.start_waiting()
    assert slots.counts() == {"evaluating": 1, "waiting": 1, "queued": 0}


def test_only_deaths_a_flow_can_cause_count_against_it() -> None:
    import signal

    from grid_local.supervisor import flow_could_cause

    assert flow_could_cause(-signal.SIGSEGV) and flow_could_cause(-signal.SIGABRT)
    assert flow_could_cause(-signal.SIGKILL, "memory allocation of 2000000000 bytes failed")
    assert not flow_could_cause(-signal.SIGKILL)  # a person, failure injection, a test, the OOM killer
    assert not flow_could_cause(-signal.SIGTERM) and not flow_could_cause(0) and not flow_could_cause(3)


def test_memory_per_flow_defaults_to_the_workers_and_a_bundle_may_only_lower_it() -> None:
    maxima = Limits(memory_mib=512)
    assert Limits.from_settings({}, maxima).memory_mib == 512
    assert Limits.from_settings({}, maxima).capped == ()  # not asking is not asking for more
    lowered = Limits.from_settings({"limits": {"memory_mib": 64}}, maxima)
    raised = Limits.from_settings({"limits": {"memory_mib": 4096}}, maxima)
    assert (lowered.memory_mib, raised.memory_mib, raised.capped) == (64, 512, ("memory_mib",))
    assert raised.hint("memory_mib", "--worker-memory") == (
        "[limits] memory_mib, capped at the grid's maximum: grid up --worker-memory")


def test_the_quota_trees_caps_lower_a_bundles_limits_and_name_their_node() -> None:
    from grid_local.worker.main import capped

    asked = Limits(eval_budget=30.0, memory_mib=1024)
    held = capped(asked, {"eval_budget": 0.5, "eval_budget_node": "/acme", "memory": 64, "memory_node": "/acme/ci"})
    assert (held.eval_budget, held.memory_mib) == (0.5, 64)
    assert held.hint("memory_mib", "--worker-memory") == "the cap of quota /acme/ci: 64 MiB of memory per flow"
    assert held.hint("eval_budget", "--max-eval-budget") == "the cap of quota /acme: 0.5s of evaluation budget per flow"
    assert capped(asked, {"memory": 2048, "memory_node": "/"}) is asked  # looser than the bundle asks: its own holds
    assert capped(asked, {}) is asked


BIG = """
def fill():
    kept = []
    for i in range(3):
        kept.append([i] * fctx().args.n)
    return kept

if __name__ == "__flow__":
    kept = fill()
    print("after the allocation")
"""


def test_a_flow_that_grows_its_workers_memory_past_its_cap_fails_before_its_next_action(flow_project) -> None:  # type: ignore[no-untyped-def]
    flow_project.write("main.flow", BIG)

    grid, flow_id, outcome = flow_project.run(args={"n": 10_000_000}, limits=Limits.from_settings({"limits": {"memory_mib": 64}}))

    assert isinstance(outcome, Failed) and outcome.kind == "LimitError"
    assert outcome.message.startswith("memory limit exceeded: this flow's evaluation grew its worker's memory by ")
    assert outcome.message.endswith("more than its 64 MiB ([limits] memory_mib)")
    assert grid.output(flow_id) == []  # stopped before the print, which never happened
    small_grid, small_id, small = flow_project.run(args={"n": 1000}, limits=Limits.from_settings({"limits": {"memory_mib": 64}}))
    assert not isinstance(small, Failed) and small_grid.output(small_id) == ["after the allocation"]
    roomy_grid, roomy_id, roomy = flow_project.run(args={"n": 10_000_000}, limits=Limits(memory_mib=1024))
    assert not isinstance(roomy, Failed), roomy
    assert roomy_grid.output(roomy_id) == ["after the allocation"]


def test_a_flow_is_charged_its_own_growth_not_that_of_a_flow_evaluating_beside_it(flow_project) -> None:  # type: ignore[no-untyped-def]
    """Two flows evaluate at once in two threads of one process: a big one without a tight cap and a
    small one capped at 32 MiB that runs as long. The small one is charged nothing of the big one's."""
    flow_project.write("main.flow", BIG)
    flow_project.write("spin.flow", """
        def spin():
            n = 0
            for i in range(fctx().args.n):
                n += i % 7  # small ints: nothing allocated
            return n

        if __name__ == "__flow__":
            print(spin())
    """)
    outcomes: dict[str, object] = {}
    begun = threading.Barrier(2)

    def evaluate(name: str, module: str, args: dict[str, int], limits: Limits) -> None:
        begun.wait()
        outcomes[name] = flow_project.run(module, args=args, limits=limits)[2]

    threads = [threading.Thread(target=evaluate, args=("small", "spin.flow", {"n": 3_000_000}, Limits(memory_mib=32))),
               threading.Thread(target=evaluate, args=("big", "main.flow", {"n": 10_000_000}, Limits(memory_mib=2048)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not isinstance(outcomes["big"], Failed), outcomes["big"]
    assert not isinstance(outcomes["small"], Failed), outcomes["small"]
