"""`flowmetal new` on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowmetal_cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOWMETAL_CONFIG", str(tmp_path / "cfg" / "config.toml"))
    monkeypatch.setenv("FLOWMETAL_HOME", str(tmp_path / "home"))
    return tmp_path


def invoke(*args: str) -> object:
    return runner.invoke(app, list(args))


def test_new_creates_a_project(isolated: Path) -> None:
    result = invoke("new", "my-flows", "--template", "rest")
    assert result.exit_code == 0, result.output
    assert "created my-flows/ from the rest template" in result.stdout
    assert (isolated / "my-flows" / "main.flow").is_file() and (isolated / "my-flows" / "lib" / "rest.star").is_file()
    assert invoke("check", "my-flows/main.flow").exit_code == 0


def test_new_json_and_default_template(isolated: Path) -> None:
    data = json.loads(invoke("new", "hi", "--json").stdout)
    assert data["template"] == "hello" and "main.flow" in data["files"]
    assert data["path"] == str(isolated / "hi")


def test_new_list() -> None:
    result = invoke("new", "--list")
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["hello", "batch", "ci", "rest", "webhook"]
    assert [t["name"] for t in json.loads(invoke("new", "--list", "--json").stdout)][0] == "hello"


@pytest.mark.parametrize("args", [["new"], ["new", "bad name"], ["new", "x", "--template", "nope"]])
def test_new_refusals_exit_2(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2 and result.stderr.startswith("error: ")


def test_new_refuses_a_non_empty_folder(isolated: Path) -> None:
    (isolated / "taken").mkdir()
    (isolated / "taken" / "x").write_text("")
    result = invoke("new", "taken")
    assert result.exit_code == 2 and "already exists" in result.stderr
