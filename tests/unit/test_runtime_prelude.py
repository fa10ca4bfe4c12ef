"""The prelude: typed flow arguments, FlowContext, Results, chained failures and retry()."""

from __future__ import annotations

import pytest

from grid_local.runtime.execution import Completed, Failed

pytestmark = pytest.mark.timeout(60)

ADD = """
def _add_impl(fctx):
    return fctx.args.a + len(fctx.args.b)

add = flow(implementation = _add_impl, args = {"a": args.int(), "b": args.string(default = "xy")})

def _echo_impl(fctx):
    return fctx.args.q

echo = flow(implementation = _echo_impl)

if __name__ == "__flow__":
    print(CALL)
"""


def run_call(flow_project, call):
    flow_project.write("main.flow", ADD.replace("CALL", call))
    return flow_project.run()


@pytest.mark.parametrize(("call", "printed"), [
    ("add(a = 1)", "3"),
    ('add(a = 1, b = "abcd")', "5"),
    ('echo(q = [1, {"k": 2.5}, None, True])', '[1, {"k": 2.5}, None, True]'),
])
def test_declared_arguments_accept_the_right_calls(flow_project, call, printed):
    grid, root, outcome = run_call(flow_project, call)

    assert outcome == Completed(None), outcome
    assert grid.output(root) == [printed]


@pytest.mark.parametrize(("call", "message"), [
    ('add(b = "x")', "flow add: missing required argument 'a'"),
    ('add(a = "1")', "flow add: argument 'a' must be int, got string"),
    ("add(a = 1, b = 2)", "flow add: argument 'b' must be string, got int"),
    ("add(a = 1, c = 2)", "flow add: unexpected argument 'c' (declared: a, b)"),
])
def test_declared_arguments_are_checked_at_the_call(flow_project, call, message):
    grid, root, outcome = run_call(flow_project, call)

    assert isinstance(outcome, Failed)
    # Pointed at the user's call (line 12 of main.flow), not at the prelude's fail().
    assert outcome.message == f"main.flow:12: {message}"
    assert grid.journals[root] == []  # refused before any child was started


def test_arguments_given_on_the_task_are_not_rechecked_but_read_as_fctx_args(flow_project):
    flow_project.write("main.flow", ADD.replace("CALL", "0"))

    _, _, outcome = flow_project.run("main.flow", "_add_impl", {"a": 40, "b": "ab"})

    assert outcome == Completed(42)


def test_flow_context_fields(flow_project):
    flow_project.write("main.flow", """
        def _who_impl(fctx: FlowContext) -> dict:
            return {"id": fctx.flow_id, "user": fctx.quota.username, "path": fctx.quota.path, "x": fctx.args.x}

        who = flow(implementation = _who_impl, args = {"x": args.list()})

        if __name__ == "__flow__":
            c = fctx()
            print(c.flow_id, c.quota.username, c.quota.path)
            print(json.encode(who(x = [1])))
    """)

    grid, root, outcome = flow_project.run()

    assert outcome == Completed(None), outcome
    assert [e.kind for e in grid.journals[root]] == ["print", "run", "wait", "print"]
    child = grid.journals[root][1].result["value"]["flow_id"]
    assert child != root
    assert grid.output(root) == [
        f"{root} tester /local/tester",
        f'{{"id":"{child}","user":"tester","path":"/local/tester","x":[1]}}',
    ]


def test_results_ok_err_is_ok_unwrap(flow_project):
    flow_project.write("main.flow", """
        r = Ok(3)
        e = Err("bad")
        print(r.ok, r.value, r.error, e.ok, e.value, e.error)
        print(is_ok(r), is_ok(e), is_ok(7), is_ok(None))
        print(unwrap(r), unwrap(5), unwrap("s"), unwrap(None), unwrap([1]))
        unwrap(Err("stopped here"))
        print("unreachable")
    """)

    grid, root, outcome = flow_project.run()

    assert isinstance(outcome, Failed)
    assert outcome.message == "stopped here"
    assert grid.output(root) == ["True 3 None False None bad", "True False False False", "3 5 s None [1]"]


def test_fail_ends_the_flow_with_its_message_and_location(flow_project):
    flow_project.write("main.flow", """
        print("before")
        fail("no good")
        print("after")
    """)

    grid, root, outcome = flow_project.run()

    assert isinstance(outcome, Failed)
    assert outcome.message == "main.flow:2:1: no good"
    assert grid.output(root) == ["before"]


CHILD = """
def _inner():
    fail("kaboom")

def _boom_impl(fctx):
    _inner()

boom = flow(implementation = _boom_impl)

def _fine_impl(fctx):
    return "fine"

fine = flow(implementation = _fine_impl)
"""


def test_failing_child_fails_the_caller_with_chained_traceback(flow_project):
    flow_project.write("lib/child.star", CHILD)
    flow_project.write("main.flow", """
        load("//lib/child.star", "boom")

        def main():
            boom()
            print("unreachable")

        if __name__ == "__flow__":
            main()
    """)

    grid, root, outcome = flow_project.run()

    assert isinstance(outcome, Failed)
    assert outcome.message == "flow boom (f2) failed: lib/child.star:2:5: kaboom"
    # The caller's frames, then the child's, in one traceback.
    trace = outcome.traceback
    assert "main.flow:4, in main" in trace
    assert "lib/child.star:5, in _boom_impl" in trace
    assert "lib/child.star:2, in _inner" in trace
    assert trace.index("main.flow:4, in main") < trace.index("lib/child.star:2, in _inner")
    assert grid.output(root) == []


def test_check_false_returns_results_instead_of_failing(flow_project):
    flow_project.write("lib/child.star", CHILD)
    flow_project.write("main.flow", """
        load("//lib/child.star", "boom", "fine")

        def main():
            actions = fctx().actions
            started = actions.run(boom, check = False)
            print("started", is_ok(started))
            results = actions.wait([started.value, actions.run(fine)], check = False)
            print("wait", is_ok(results))
            bad, good = results.value
            print(bad.ok, bad.error)
            print(good.ok, good.value)
            h = actions.http("GET", "https://example.test/", check = False)
            print("http", h.ok, h.error)

        if __name__ == "__flow__":
            main()
    """)

    def http(request):
        return {"ok": False, "value": None, "error": "connection refused"}

    grid, root, outcome = flow_project.run(http=http)

    assert outcome == Completed(None), outcome
    assert grid.output(root) == [
        "started True",
        "wait True",
        "False flow boom (f2) failed: lib/child.star:2:5: kaboom",
        "True fine",
        "http False connection refused",
    ]


def test_failed_action_with_check_fails_the_flow(flow_project):
    flow_project.write("main.flow", """
        fctx().actions.http("GET", "https://example.test/")
        print("unreachable")
    """)

    grid, root, outcome = flow_project.run(http=lambda request: {"ok": False, "value": None, "error": "HTTP 503"})

    assert isinstance(outcome, Failed)
    assert outcome.message == "HTTP 503"
    assert [e.kind for e in grid.journals[root]] == ["http"]


FLAKY = """
load("pkg.flowmetal.io/http/v1", "get")

def _fetch_impl(fctx):
    return get(fctx.args.url).body

fetch = flow(implementation = _fetch_impl, args = {"url": args.string()})

if __name__ == "__flow__":
    print(retry(fetch, limit = LIMIT, backoff = 2.0)(url = "https://example.test/"))
"""


def flaky(failures):
    calls = []

    def http(request):
        calls.append(request)
        if len(calls) <= failures:
            return {"ok": False, "value": None, "error": f"HTTP 503 (attempt {len(calls)})"}
        return {"ok": True, "value": {"status": 200, "headers": {}, "body": "fine", "json": None}, "error": None}

    return http, calls


def test_retry_runs_the_flow_again_until_it_succeeds(flow_project):
    flow_project.write("main.flow", FLAKY.replace("LIMIT", "3"))
    http, calls = flaky(failures=2)

    grid, root, outcome = flow_project.run(http=http)

    assert outcome == Completed(None), outcome
    assert grid.output(root) == ["fine"]
    assert len(calls) == 3
    entries = grid.journals[root]
    assert [e.kind for e in entries] == ["run", "wait", "sleep", "run", "wait", "sleep", "run", "wait", "print"]
    # Exponential backoff through durable sleeps.
    assert [e.args["seconds"] for e in entries if e.kind == "sleep"] == [2.0, 4.0]
    # Each attempt is its own child flow.
    assert len({e.result["value"]["flow_id"] for e in entries if e.kind == "run"}) == 3


def test_retry_gives_up_after_the_limit_with_the_last_error(flow_project):
    flow_project.write("main.flow", FLAKY.replace("LIMIT", "2"))
    http, calls = flaky(failures=5)

    grid, root, outcome = flow_project.run(http=http)

    assert isinstance(outcome, Failed)
    assert outcome.message == "flow fetch (f3) failed: HTTP 503 (attempt 2)"
    assert len(calls) == 2
    assert [e.kind for e in grid.journals[root]] == ["run", "wait", "sleep", "run", "wait"]


def test_retry_should_retry_can_stop_early(flow_project):
    flow_project.write("main.flow", FLAKY.replace("LIMIT", "5").replace(
        "limit = 5", 'limit = 5, should_retry = lambda e: "503" not in e'))
    http, calls = flaky(failures=5)

    _, _, outcome = flow_project.run(http=http)

    assert isinstance(outcome, Failed)
    assert len(calls) == 1


def test_retry_of_a_plain_callable_returning_results(flow_project):
    flow_project.write("main.flow", """
        def attempt():
            n = fctx().actions.random()
            return Err("low") if n < 2 else Ok("never")

        print(retry(attempt, limit = 2, backoff = 0.5)())
    """)

    grid, root, outcome = flow_project.run()

    assert isinstance(outcome, Failed)
    assert outcome.message == "low"
    assert [e.kind for e in grid.journals[root]] == ["random", "sleep", "random"]
