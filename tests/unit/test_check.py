"""The checker: every problem in a script and what it loads, with file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowmetal_cli.checker import ERROR, WARNING, check_paths
from grid_local.errors import ScriptError
from tests.helpers import write_file

write = write_file


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "flowmetal.toml", '[project]\nname = "t"\n')
    return tmp_path


def lines(report: object) -> list[str]:
    return [str(p) for p in report.problems]  # type: ignore[attr-defined]


def test_a_clean_project_has_no_problems(project: Path) -> None:
    write(project, "lib/greet.star", '''
        def greeting(name: str) -> str:
            return "hi " + name
    ''')
    write(project, "main.flow", '''
        load("pkg.flowmetal.io/prelude/v1", "flow", "FlowContext")
        load("pkg.flowmetal.io/http/v1", "get")
        load("//lib/greet.star", "greeting")

        def _whoami_impl(fctx: FlowContext) -> str:
            return fctx.quota.username

        whoami = flow(implementation = _whoami_impl)

        def hello():
            print(greeting(whoami()))
            get("http://example.com")

        if __name__ == "__flow__":
            hello()
    ''')
    report = check_paths([Path("main.flow")])
    assert report.problems == []
    assert report.files == ["main.flow", "lib/greet.star"]


def test_type_errors_across_modules(project: Path) -> None:
    write(project, "lib/greet.star", '''
        def greeting(name: str) -> str:
            return "hi " + name
    ''')
    write(project, "main.flow", '''
        load("//lib/greet.star", "greeting")

        def count() -> int:
            return greeting("x")

        def call():
            greeting(1, 2)
    ''')
    report = check_paths([Path("main.flow")])
    assert lines(report) == [
        "main.flow:4:5: error: Expected type `int` but got `str`",
        "main.flow:7:17: error: Too many positional arguments",
    ]


def test_syntax_error_in_a_loaded_file_and_others_still_reported(project: Path) -> None:
    write(project, "lib/broken.star", "def f(:\n    pass\n")
    write(project, "main.flow", '''
        load("//lib/broken.star", "f")

        def g() -> int:
            return "s"
    ''')
    report = check_paths([Path("main.flow")])
    assert len(report.errors) == 2
    assert str(report.errors[0]).startswith("lib/broken.star:1:7: error: Parse error")
    assert str(report.errors[1]) == "main.flow:4:5: error: Expected type `int` but got `str`"


def test_load_problems_point_at_the_load(project: Path) -> None:
    write(project, "lib/a.star", 'load("//main.flow", "x")\na = 1\n')
    write(project, "main.flow", '''
        load("//lib/a.star", "a", "missing", "_private")
        load("./gone.star", "g")
        load("../outside.star", "o")
        load("pkg.flowmetal.io/http/v1", "gett")
        load("pkg.flowmetal.io/nope/v1", "n")
        x = [a, g, o, gett, n]
    ''')
    report = check_paths([Path("main.flow")])
    errors = [str(p) for p in report.errors]
    assert errors == [
        "lib/a.star:1:6: error: load cycle: main.flow -> lib/a.star -> main.flow",
        "main.flow:1:6: error: '//lib/a.star' does not define 'missing'",
        "main.flow:1:6: error: cannot load private symbol '_private' from '//lib/a.star'",
        "main.flow:2:6: error: file not found: gone.star",
        "main.flow:3:6: error: cannot load '../outside.star': it leaves the project root",
        "main.flow:4:6: error: 'pkg.flowmetal.io/http/v1' does not define 'gett'",
        "main.flow:5:6: error: unknown built-in library 'pkg.flowmetal.io/nope/v1' "
        "(known: pkg.flowmetal.io/docker/v1, pkg.flowmetal.io/http/v1, pkg.flowmetal.io/prelude/v1, pkg.flowmetal.io/v1/prelude, pkg.flowmetal.io/workspace/v1)",
    ]


def test_lint_findings_are_warnings(project: Path) -> None:
    write(project, "main.flow", '''
        def f():
            unused = 1
    ''')
    report = check_paths([Path("main.flow")])
    assert report.errors == []
    assert [p.severity for p in report.problems] == [WARNING]
    assert str(report.problems[0]).startswith("main.flow:2:5: warning: Unused assignment of `unused`")


def test_paths_are_shown_from_the_current_directory(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(project / "sub", "flowmetal.toml", "")
    write(project / "sub", "lib/x.star", "def x() -> int:\n    return 's'\n")
    write(project / "sub", "main.flow", 'load("//lib/x.star", "x")\nx()\n')
    report = check_paths([Path("sub/main.flow")])
    assert [str(p) for p in report.errors] == ["sub/lib/x.star:2:5: error: Expected type `int` but got `str`"]


def test_each_file_is_reported_once_across_entries(project: Path) -> None:
    write(project, "lib/x.star", "def x() -> int:\n    return 's'\n")
    write(project, "a.flow", 'load("//lib/x.star", "x")\nx()\n')
    write(project, "b.flow", 'load("//lib/x.star", "x")\nx()\n')
    report = check_paths([Path("a.flow"), Path("b.flow"), Path("lib/x.star")])
    assert len(report.errors) == 1
    assert report.errors[0].severity == ERROR


def test_missing_files_are_usage_errors(project: Path) -> None:
    with pytest.raises(ScriptError, match="no such file"):
        check_paths([Path("nope.flow")])
    write(project, "notes.txt", "x")
    with pytest.raises(ScriptError, match="not a Flowmetal script"):
        check_paths([Path("notes.txt")])


def test_the_seed_fixtures_check_clean(project: Path) -> None:
    fixtures = Path(__file__).parents[1] / "fixtures" / "flows" / "seed"
    if not fixtures.is_dir():
        pytest.skip("seed fixtures not present")
    report = check_paths(sorted(fixtures.glob("*.flow")))
    assert report.errors == []
