"""`flowmetal bundle` and `flowmetal check` on the command line: output, files written, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowmetal_cli.main import app
from grid_local.bundle_format import digest_of, read_bundle
from tests.helpers import write_file

runner = CliRunner()


write = write_file


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOWMETAL_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("FLOWMETAL_HOME", str(tmp_path / "home"))
    write(tmp_path, "proj/flowmetal.toml", '[project]\nname = "p"\n')
    write(tmp_path, "proj/lib/util.star", 'def double(x: int) -> int:\n    return x * 2\n')
    write(tmp_path, "proj/main.flow", '''
        load("//lib/util.star", "double")

        if __name__ == "__flow__":
            print(double(21))
    ''')
    return tmp_path


def test_bundle_writes_the_archive_and_prints_its_digest(project: Path) -> None:
    result = runner.invoke(app, ["bundle", "proj/main.flow"])
    assert result.exit_code == 0, result.output
    archive = project / "main.bundle"  # default: <script stem>.bundle in the current directory
    data = archive.read_bytes()
    lines = result.stdout.splitlines()
    assert lines[0] == digest_of(data)
    assert any("lib/util.star" in line for line in lines) and any("* main.flow" in line for line in lines)
    assert lines[-1] == f"wrote main.bundle (2 files, {len(data)} bytes)"
    assert sorted(read_bundle(data, lines[0]).files) == ["lib/util.star", "main.flow"]


def test_bundle_output_and_json(project: Path) -> None:
    result = runner.invoke(app, ["bundle", "proj/main.flow", "-o", "dist/app.bundle", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    data = (project / "dist" / "app.bundle").read_bytes()
    assert summary["digest"] == digest_of(data) and summary["bytes"] == len(data)
    assert summary["output"] == "dist/app.bundle" and summary["entry"] == "main.flow"
    assert [f["path"] for f in summary["files"]] == ["lib/util.star", "main.flow"]
    assert summary["settings"] == {"project": {"name": "p"}} and summary["warnings"] == []


def test_bundle_is_the_same_from_another_folder(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = runner.invoke(app, ["bundle", "proj/main.flow", "--json"])
    monkeypatch.chdir(project / "proj" / "lib")
    second = runner.invoke(app, ["bundle", "../main.flow", "--json", "-o", str(project / "other.bundle")])
    assert json.loads(first.stdout)["digest"] == json.loads(second.stdout)["digest"]
    assert (project / "main.bundle").read_bytes() == (project / "other.bundle").read_bytes()


def test_bundle_to_stdout(project: Path) -> None:
    result = runner.invoke(app, ["bundle", "proj/main.flow", "-o", "-"])
    assert result.exit_code == 0
    assert result.stdout_bytes.startswith(b"PK")
    assert result.stderr.strip() == digest_of(result.stdout_bytes)


@pytest.mark.parametrize(("source", "expected"), [
    ('load("//lib/nope.star", "x")\n', "error: proj/main.flow:1: file not found: lib/nope.star"),
    ('x = 1\nload("../../etc.star", "x")\n', "error: proj/main.flow:2: cannot load '../../etc.star': it leaves the project root"),
    ("def f(:\n", "error: proj/main.flow:1:7: Parse error"),
])
def test_refusals_are_one_line_and_exit_2(project: Path, source: str, expected: str) -> None:
    (project / "proj" / "main.flow").write_text(source)
    result = runner.invoke(app, ["bundle", "proj/main.flow"])
    assert result.exit_code == 2
    assert result.stderr.startswith(expected)
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (project / "main.bundle").exists()


def test_oversize_refusal(project: Path) -> None:
    (project / "proj" / "flowmetal.toml").write_text("[bundle]\nmax_file_bytes = 60\n")
    result = runner.invoke(app, ["bundle", "proj/main.flow"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: proj/main.flow:1: main.flow is 84 bytes, over the limit of 60 "
        "([bundle] max_file_bytes in flowmetal.toml)\n"
    )


def test_missing_file_is_a_usage_error(project: Path) -> None:
    result = runner.invoke(app, ["bundle", "nope.flow"])
    assert result.exit_code == 2 and result.stderr.startswith("error: nope.flow: no such file")


def test_lint_warnings_are_printed_but_do_not_block(project: Path) -> None:
    write(project, "proj/main.flow", "def f():\n    unused = 1\n")
    result = runner.invoke(app, ["bundle", "proj/main.flow"])
    assert result.exit_code == 0
    assert "warning: proj/main.flow:2:5: Unused assignment of `unused`" in result.stderr


def test_check_clean_exits_0(project: Path) -> None:
    result = runner.invoke(app, ["check", "proj/main.flow"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.strip() == "0 errors, 0 warnings in 2 files"


def test_check_reports_every_problem_with_file_line_col(project: Path) -> None:
    write(project, "proj/lib/util.star", "def double(x: int) -> int:\n    return str(x)\n")
    write(project, "proj/main.flow", '''
        load("//lib/util.star", "double", "triple")

        def f():
            unused = double(1, 2)
    ''')
    result = runner.invoke(app, ["check", "proj/main.flow"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "proj/lib/util.star:2:5: error: Expected type `int` but got `str`",
        "proj/main.flow:1:6: error: '//lib/util.star' does not define 'triple'",
        "proj/main.flow:1:35: warning: Unused `load` of `triple` (unused-load)",
        "    hint: remove the name from the load(), or use it",
        "proj/main.flow:4:5: warning: Unused assignment of `unused` (unused-assign)",
        "    hint: remove the assignment, or name the variable with a leading `_`",
        "proj/main.flow:4:24: error: Too many positional arguments",
    ]
    assert result.stderr.strip() == "3 errors, 2 warnings in 2 files"


def test_check_warnings_alone_exit_0(project: Path) -> None:
    write(project, "proj/main.flow", "def f():\n    unused = 1\n")
    result = runner.invoke(app, ["check", "proj/main.flow"])
    assert result.exit_code == 0
    assert result.stdout.startswith("proj/main.flow:2:5: warning:")


def test_check_json(project: Path) -> None:
    write(project, "proj/main.flow", "def f() -> int:\n    return 's'\n")
    result = runner.invoke(app, ["check", "proj/main.flow", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["errors"] == 1 and report["files"] == ["proj/main.flow"]
    assert report["problems"][0] == {"file": "proj/main.flow", "line": 2, "column": 5, "severity": "error",
                                     "message": "Expected type `int` but got `str`"}


def test_check_usage_errors_exit_2(project: Path) -> None:
    assert runner.invoke(app, ["check"]).exit_code == 2
    result = runner.invoke(app, ["check", "missing.flow"])
    assert result.exit_code == 2 and result.stderr.startswith("error: missing.flow: no such file")


def test_help_has_examples() -> None:
    for command in (["bundle"], ["check"], ["new"], ["context", "add"], ["context", "list"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "Examples" in result.stdout, command
