"""What `flowmetal check` (and `run`, before uploading) catches that a Python habit gets wrong, with hints."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowmetal_cli.checker import ERROR, WARNING, Problem, check_paths
from flowmetal_cli.main import app
from grid_local.errors import ScriptError
from grid_local.runtime import dialect
from grid_local.runtime.execution import Failed
from tests.helpers import write_file

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOWMETAL_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("FLOWMETAL_HOME", str(tmp_path / "home"))
    write_file(tmp_path, "flowmetal.toml", '[project]\nname = "t"\n')
    return tmp_path


def problems(project: Path, source: str, path: str = "main.flow") -> list[Problem]:
    write_file(project, path, source)
    return check_paths([Path(path)]).problems


def errors(project: Path, source: str, path: str = "main.flow") -> list[Problem]:
    return [p for p in problems(project, source, path) if p.severity == ERROR]


def where(problem: Problem) -> str:
    return f"{problem.file}:{problem.line}:{problem.column}"


# -- names that resolve to nothing ---------------------------------------------------------------

def test_python_builtins_the_dialect_lacks_are_undefined_names_with_what_to_write(project: Path) -> None:
    found = errors(project, '''
        def total(xs):
            return sum(xs)

        def main():
            f = open("x.txt")
            raise_it = ValueError("bad")
            return [total([1, 2]), f, raise_it, foo.bar]
    ''')
    assert [(where(p), p.message) for p in found] == [
        ("main.flow:2:12", "undefined name `sum`"),
        ("main.flow:5:9", "undefined name `open`"),
        ("main.flow:6:16", "undefined name `ValueError`"),
        ("main.flow:7:41", "undefined name `foo`"),
    ]
    assert "for x in xs: total += x" in found[0].hint
    assert "workspace" in found[1].hint
    assert "fail(" in found[2].hint and "check = False" in found[2].hint
    assert found[3].hint  # every undefined name says what to do


def test_a_typo_of_a_local_is_an_undefined_name_suggesting_it(project: Path) -> None:
    found = errors(project, '''
        def main(fctx):
            message = "hi"
            return mesage
    ''')
    assert [(where(p), p.message, p.hint) for p in found] == [
        ("main.flow:3:12", "undefined name `mesage`", "did you mean `message`?"),
    ]


def test_scopes_follow_starlark(project: Path) -> None:
    # Globals defined later, parameters, comprehension variables, lambdas, nested functions and the
    # runtime's __name__ all resolve; a comprehension's variable does not leak out of it.
    found = errors(project, '''
        def first():
            return [helper(x) for x in range(3) if x > LIMIT]

        def helper(v, *rest, scale = 2, **opts):
            inner = lambda w: w * scale
            def deeper():
                return inner(v) + len(rest) + len(opts)
            return deeper()

        LIMIT = 0
        leaked = [y for y in range(2)]
        after = y

        if __name__ == "__flow__":
            print(first(), struct(a = 1), json.encode([]), fctx().quota.username)
    ''')
    assert [p.message for p in found] == ["undefined name `y`"]


def test_run_refuses_a_script_with_check_errors_before_uploading(project: Path) -> None:
    write_file(project, "main.flow", 'if __name__ == "__flow__":\n    print(sum([1, 2, 3]))\n')
    result = runner.invoke(app, ["run", "main.flow"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == "error: main.flow:2:11: undefined name `sum`"
    assert lines[1].startswith("    hint: there is no `sum`")
    assert lines[-1] == "1 error (see `flowmetal check`): nothing was uploaded"
    assert not (project / "home").exists()  # no grid was started, nothing was written


def test_push_refuses_a_script_with_check_errors_before_uploading(project: Path) -> None:
    write_file(project, "main.flow", 'def main():\n    return sum([1])\n')
    result = runner.invoke(app, ["push", "--name", "nightly", "main.flow"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: main.flow:2:12: undefined name `sum`")
    assert not (project / "home").exists()


# -- unused loads --------------------------------------------------------------------------------

def test_an_unused_load_is_a_warning_with_a_hint(project: Path) -> None:
    found = problems(project, '''
        load("pkg.flowmetal.io/http/v1", "get", "post")

        def main():
            return get("http://127.0.0.1:1/")
    ''')
    assert [(where(p), p.severity, p.message) for p in found] == [
        ("main.flow:1:41", WARNING, "Unused `load` of `post` (unused-load)"),
    ]
    assert found[0].hint == "remove the name from the load(), or use it"


# -- calls to flows ------------------------------------------------------------------------------

FLOW = '''
    def _deploy_impl(fctx):
        return fctx.args.target

    deploy = flow(implementation = _deploy_impl, args = {
        "target": args.string(),
        "replicas": args.int(default = 1),
        "ratio": args.float(default = 0.5),
        "labels": args.dict(required = False),
    })
'''


def test_calling_a_flow_with_undeclared_missing_or_mistyped_arguments(project: Path) -> None:
    found = errors(project, FLOW + '''
    def main():
        deploy(target = "web", replica = 2)
        deploy(replicas = 2)
        deploy(target = 3, replicas = "2", ratio = 1, labels = [])
        deploy("web")
        deploy(target = "web", ratio = 0.1, labels = {"a": "b"}, **{})
    ''')
    assert [(where(p), p.message) for p in found] == [
        ("main.flow:12:28", "flow `deploy` has no argument `replica` (declared: labels, ratio, replicas, target)"),
        ("main.flow:13:5", "flow `deploy` is called without its required argument `target`"),
        ("main.flow:14:21", "argument `target` of flow `deploy` must be string, got int"),
        ("main.flow:14:35", "argument `replicas` of flow `deploy` must be int, got string"),
        ("main.flow:14:60", "argument `labels` of flow `deploy` must be dict, got list"),
        ("main.flow:15:5", "flow `deploy` is called without its required argument `target`"),
        ("main.flow:15:12", "flow `deploy` takes keyword arguments only"),
    ]
    assert found[0].hint == "did you mean `replicas`?"
    assert found[1].hint == "pass `target = ...`, or give it a default: `args.string(default = ...)`"
    assert found[6].hint == "name each argument: `deploy(name = value)`"


def test_flows_started_with_run_or_retry_and_flows_loaded_from_the_project_are_checked(project: Path) -> None:
    write_file(project, "lib/deploy.star", FLOW)
    found = errors(project, '''
        load("//lib/deploy.star", ship = "deploy")

        def main(fctx):
            task = fctx.actions.run(ship, target = "web", check = False, zone = "eu")
            again = retry(ship, limit = 2)(target = ["web"])
            return [task, again, ship(target = "ok")]
    ''')
    assert [(where(p), p.message) for p in found] == [
        ("main.flow:4:66", "flow `ship` has no argument `zone` (declared: labels, ratio, replicas, target)"),
        ("main.flow:5:45", "argument `target` of flow `ship` must be string, got list"),
    ]


def test_a_flow_without_args_accepts_any_keywords_and_a_computed_value_is_not_guessed(project: Path) -> None:
    assert errors(project, '''
        def _free_impl(fctx):
            return 1

        free = flow(implementation = _free_impl)

        def _typed_impl(fctx):
            return fctx.args.n

        typed = flow(implementation = _typed_impl, args = {"n": args.int()})

        def main(fctx):
            n = len("abc")
            return [free(anything = 1, at = "all"), typed(n = n), typed(n = -2)]
    ''') == []


# -- flow contexts -------------------------------------------------------------------------------

def test_fctx_fields_on_the_prelude_function_and_unknown_actions(project: Path) -> None:
    found = errors(project, '''
        def helper():
            return fctx.actions.now()

        def _impl(fctx):
            return fctx.actions.sleeep(1)

        def other():
            return fctx().actions.uuid() + fctx().args.x
    ''')
    assert [(where(p), p.message) for p in found] == [
        ("main.flow:2:12", "`fctx.actions`: `fctx` here is the prelude's function, not a flow context"),
        ("main.flow:5:12", "there is no action `sleeep`"),
    ]
    assert "`fctx().actions`" in found[0].hint
    assert found[1].hint.startswith("did you mean `sleep`?")


def test_actions_while_a_module_loads_are_errors_where_the_module_is_evaluated_again(project: Path) -> None:
    write_file(project, "lib/clock.star", "STARTED = fctx().actions.now()\n")
    found = errors(project, '''
        load("//lib/clock.star", "STARTED")

        def _child_impl(fctx):
            return STARTED

        child = flow(implementation = _child_impl)
        stamp = fctx().actions.uuid()
        child()
        sleep(1)

        if __name__ == "__flow__":
            print(child(), fctx().actions.now())
            sleep(1)
    ''')
    assert [(where(p), p.message.split(":")[0]) for p in found] == [
        ("lib/clock.star:1:11", "`fctx().actions.now` is called while the module loads, outside any flow"),
        ("main.flow:7:9", "`fctx().actions.uuid` is called while the module loads, outside any flow"),
        ("main.flow:8:1", "the flow `child` is called while the module loads, outside any flow"),
        ("main.flow:9:1", "`sleep` is called while the module loads, outside any flow"),
    ]
    assert "every flow that loads it" in found[0].message
    assert "each child flow evaluates the whole file again" in found[1].message
    assert 'if __name__ == "__flow__":' in found[1].hint


def test_an_entry_script_without_flows_may_take_actions_at_top_level(project: Path) -> None:
    # It runs once, as the root flow: nothing evaluates it again.
    assert errors(project, 'print(fctx().actions.now())\nfctx().actions.sleep(1)\n') == []


# -- Python constructs the dialect lacks ---------------------------------------------------------

@pytest.mark.parametrize(("source", "keyword", "hint"), [
    ("while True:\n    pass\n", "while", "for attempt in range("),
    ("import os\n", "import", 'load("pkg.flowmetal.io/http/v1", "get")'),
    ("from os import path\n", "from", "load("),
    ("class Job:\n    pass\n", "class", "struct("),
    ("global x\n", "global", "return the new value"),
    ("def f():\n    nonlocal x\n", "nonlocal", "return the new value"),
    ("try:\n    x = 1\nexcept:\n    pass\n", "try", "fail("),
    ("raise ValueError(1)\n", "raise", "fail("),
    ("with open(p) as f:\n    pass\n", "with", "resources"),
    ("def f():\n    yield 1\n", "yield", "return it"),
    ("async def f():\n    pass\n", "async", "fctx.actions.wait"),
    ("x = await y\n", "await", "fctx.actions.wait"),
    ("assert x\n", "assert", "if not condition: fail("),
    ("del x\n", "del", "pop("),
    ("x = y is None\n", "is", "x == None"),
])
def test_a_python_keyword_says_what_to_write_instead(project: Path, source: str, keyword: str, hint: str) -> None:
    [found] = errors(project, source)
    assert found.message == f"Parse error: cannot use reserved keyword `{keyword}`"
    assert hint in found.hint


@pytest.mark.parametrize(("source", "hint"), [
    ("x = 2 ** 10\n", "no `**` operator"),
    ("x = {1, 2}\n", "no sets"),
    ("if (n := 3):\n    pass\n", "no `:=`"),
    ("ok = 1 < 2 < 3\n", "a < b and b < c"),
    ("@flow\ndef f():\n    pass\n", "no decorators"),
    ("for x in []:\n    pass\nelse:\n    pass\n", "no `else`"),
    ("xs = [*a, 1]\n", "list(a) + b"),
    ("d = {**a}\n", "d.update(b)"),
    ("n = 1_000\n", "no `_` separators"),
    ("x = 0755\n", "0o17"),
    ('x = f"{a.b}"\n', "plain names only"),
    ('x = b"raw"\n', "no bytes"),
])
def test_a_python_construct_says_what_to_write_instead(project: Path, source: str, hint: str) -> None:
    [found] = errors(project, source)
    assert found.message.startswith(("Parse error", "Not a valid identifier"))
    assert "expected one of" not in found.message
    assert hint in found.hint


def test_iterating_a_string_and_print_keywords_python_has(project: Path) -> None:
    found = errors(project, '''
        def main():
            for c in "abc":
                print(c, end = "", sep = "")
            return [c for c in f"{main}"] + ["x".elems()]
    ''')
    assert [(where(p), p.message) for p in found] == [
        ("main.flow:2:14", "a string is not iterable in Starlark"),
        ("main.flow:3:18", "print() takes no `end`"),
        ("main.flow:4:24", "a string is not iterable in Starlark"),
    ]
    assert ".elems()" in found[0].hint


def test_the_hint_is_in_the_runtime_error_too(flow_project) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScriptError) as caught:
        dialect.parse("main.flow", "while True:\n    pass\n")
    assert str(caught.value).startswith("main.flow:1:1: Parse error: cannot use reserved keyword `while`. Hint: ")
    flow_project.write("main.flow", "import json\n")
    _, _, outcome = flow_project.run()
    assert isinstance(outcome, Failed)
    assert "cannot use reserved keyword `import`. Hint: write `load(" in outcome.message


def test_check_prints_the_hint_under_the_problem(project: Path) -> None:
    write_file(project, "main.flow", "class Job:\n    pass\n")
    result = runner.invoke(app, ["check", "main.flow"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "main.flow:1:1: error: Parse error: cannot use reserved keyword `class`",
        "    hint: there are no classes: use `struct(name = ..., size = ...)` for a value, "
        "`record(name = str, size = int)` for a typed shape, and plain functions for behaviour",
    ]


def test_a_python_builtin_at_run_time_says_what_to_write_instead(flow_project) -> None:  # type: ignore[no-untyped-def]
    """A flow started without `run`'s check (a deployment, an older bundle) still gets the hint."""
    flow_project.write("main.flow", "print(sum([1, 2, 3]))\n")
    _, _, outcome = flow_project.run()
    assert isinstance(outcome, Failed)
    assert outcome.message == ("main.flow:1:7: Variable `sum` not found. Hint: there is no `sum`: add in a loop "
                               "(`total = 0`, `for x in xs: total += x`)")
