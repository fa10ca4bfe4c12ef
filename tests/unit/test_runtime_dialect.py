"""The Flowmetal dialect: checked annotations, the extensions DESIGN.md promises, errors with file:line:col."""

from __future__ import annotations

import pytest

from grid_local.errors import ScriptError, SourceLocation
from grid_local.runtime import dialect
from grid_local.runtime.execution import Completed, Failed

pytestmark = pytest.mark.timeout(60)


def assert_no_python_traceback(outcome: Failed) -> None:
    for text in (outcome.message, outcome.traceback):
        assert 'File "' not in text
        assert "grid_local" not in text
        assert "internal error" not in text


def test_extensions_fstrings_lambdas_nested_defs_struct_record_json_top_level_statements(flow_project):
    flow_project.write("main.flow", """
        Point = record(x = int, y = int)
        p = Point(x = 1, y = 2)
        s = struct(name = "box", size = 3)

        def scale(k):
            def by(v):
                return v * k
            return by

        double = lambda v: v * 2
        total = 0
        for i in range(4):
            total += i
        name = s.name
        if total > 5:
            print(f"total={total} name={name}", p.x + p.y, scale(3)(s.size), double(4))
            print(json.encode({"a": [1, 2], "b": None}), json.decode('{"k": [true, 1.5]}')["k"][1])
        else:
            print("top-level if took the wrong branch")
    """)

    grid, root, outcome = flow_project.run()

    assert outcome == Completed(None), outcome
    assert grid.output(root) == ["total=6 name=box 3 9 8", '{"a":[1,2],"b":null} 1.5']


def test_wrong_argument_type_fails_naming_file_and_line(flow_project):
    flow_project.write("main.flow", """
        def inc(x: int) -> int:
            return x + 1

        inc("a")
    """)

    _, _, outcome = flow_project.run()

    assert isinstance(outcome, Failed)
    assert outcome.message.startswith("main.flow:4:1: ")
    assert "does not match the type annotation `int` for argument `x`" in outcome.message
    assert_no_python_traceback(outcome)


def test_wrong_return_type_fails_at_the_return(flow_project):
    flow_project.write("main.flow", """
        def name() -> str:
            return 42

        name()
    """)

    _, _, outcome = flow_project.run()

    assert isinstance(outcome, Failed)
    assert outcome.message.startswith("main.flow:2:5: ")
    assert "for return type" in outcome.message


def test_wrong_record_field_type_fails(flow_project):
    flow_project.write("main.flow", """
        Point = record(x = int, y = int)
        Point(x = "a", y = 2)
    """)

    _, _, outcome = flow_project.run()

    assert isinstance(outcome, Failed)
    assert outcome.message.startswith("main.flow:2:1: ")
    assert "`int`" in outcome.message


def test_annotated_flow_implementation_is_checked_in_the_child(flow_project):
    flow_project.write("main.flow", """
        def _count_impl(fctx: FlowContext) -> int:
            return fctx.args.n

        count = flow(implementation = _count_impl)

        if __name__ == "__flow__":
            count(n = "three")
    """)

    _, _, outcome = flow_project.run()

    assert isinstance(outcome, Failed)
    assert outcome.message.startswith("flow count (f2) failed: main.flow:2:5: ")
    assert "for return type" in outcome.message


def test_unknown_name_fails_with_exact_location(flow_project):
    flow_project.write("main.flow", """
        x = 1
        print(undefined_name)
    """)

    _, _, outcome = flow_project.run()

    assert isinstance(outcome, Failed)
    assert outcome.message == "main.flow:2:7: Variable `undefined_name` not found"
    assert_no_python_traceback(outcome)


def test_unknown_name_inside_a_function_names_the_function_line(flow_project):
    flow_project.write("main.flow", """
        def g():
            return zzz

        g()
    """)

    _, _, outcome = flow_project.run()

    assert isinstance(outcome, Failed)
    assert outcome.message.startswith("main.flow:2:12: Variable `zzz` not found")


def test_syntax_error_is_a_script_error_with_exact_location(flow_project):
    flow_project.write("main.flow", """
        x = 1
        def f(:
            pass
    """)

    _, _, outcome = flow_project.run()

    assert isinstance(outcome, Failed)
    assert outcome.kind == "ScriptError"
    assert outcome.message.startswith("main.flow:2:7: Parse error: unexpected symbol ':'")
    assert_no_python_traceback(outcome)


def test_parse_raises_script_error_with_location():
    with pytest.raises(ScriptError) as caught:
        dialect.parse("lib/x.star", "a = 1\nb = [1,\nc = 2\n")

    assert caught.value.location == SourceLocation("lib/x.star", 3, 3)
    assert caught.value.message.startswith("Parse error")
    assert str(caught.value).startswith("lib/x.star:3:3: Parse error")


def test_python_only_syntax_is_refused():
    """Starlark has no while, class or try: a script that uses them fails to parse, with a location."""
    for source, line in [("x = 0\nwhile x:\n    pass\n", 2), ("class A:\n    pass\n", 1), ("try:\n  x = 1\nexcept:\n  pass\n", 1)]:
        with pytest.raises(ScriptError) as caught:
            dialect.parse("main.flow", source)
        assert caught.value.location is not None
        assert caught.value.location.file == "main.flow"
        assert caught.value.location.line == line


def test_typecheck_reports_lines_of_the_users_file():
    """The static check prepends the prelude load; the lines it reports are the user's lines."""
    source = 'x = 1\n\ndef f() -> int:\n    return "s"\n'
    errors, _ = dialect.typecheck("main.flow", source, {})
    assert [str(e) for e in errors] == ["main.flow:4:5: Expected type `int` but got `str`"]


def test_no_clock_or_randomness_builtins(flow_project):
    """Only fctx.actions reach the world: there is no time or random module to call."""
    flow_project.write("main.flow", """
        x = time.time()
    """)

    _, _, outcome = flow_project.run()

    assert isinstance(outcome, Failed)
    assert outcome.message.startswith("main.flow:1:5: Variable `time` not found")
