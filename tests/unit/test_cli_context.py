"""`flowmetal context ...` on the command line: tokens never printed, refusals exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowmetal_cli.main import app

runner = CliRunner()
SECRET = "tok-very-secret-123"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOWMETAL_CONFIG", str(tmp_path / "cfg" / "config.toml"))
    monkeypatch.setenv("FLOWMETAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FLOWMETAL_CONTEXT", raising=False)
    monkeypatch.setenv("STAGING_TOKEN", SECRET)
    (tmp_path / "ci.token").write_text(SECRET + "\n")
    return tmp_path


def invoke(*args: str) -> object:
    result = runner.invoke(app, list(args))
    assert SECRET not in result.output, "a token was printed"
    return result


def test_add_use_list_show_remove(isolated: Path) -> None:
    result = invoke("context", "add", "staging", "--url", "https://grid.example.com",
                    "--token-env", "STAGING_TOKEN")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "added context staging (https://grid.example.com, token from env:STAGING_TOKEN)"
    result = invoke("context", "add", "ci", "--url", "http://127.0.0.1:9999", "--token-file", "ci.token", "--use")
    assert result.exit_code == 0 and "current context: ci" in result.stdout

    listing = invoke("context", "list")
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["NAME", "URL", "TOKEN"]
    assert lines[1].split() == ["local", "(local", "grid,", "not", "running)", "-"]
    assert lines[2].split() == ["*", "ci", "http://127.0.0.1:9999", f"file:{(isolated / 'ci.token').resolve()}"]
    assert lines[3].split() == ["staging", "https://grid.example.com", "env:STAGING_TOKEN"]

    data = json.loads(invoke("context", "list", "--json").stdout)
    assert [(c["name"], c["current"]) for c in data] == [("local", False), ("ci", True), ("staging", False)]
    assert data[2]["token"] == "env:STAGING_TOKEN" and data[0]["local"] is True

    shown = json.loads(invoke("context", "show", "--json").stdout)
    assert shown["name"] == "ci" and shown["current"] is True
    assert shown["config"] == str(isolated / "cfg" / "config.toml")
    assert json.loads(invoke("context", "show", "staging", "--json").stdout)["url"] == "https://grid.example.com"
    text = invoke("context", "show", "staging").stdout
    assert "token:   env:STAGING_TOKEN" in text and "url:     https://grid.example.com" in text

    assert invoke("context", "use", "staging").stdout.strip() == "current context: staging"
    result = invoke("context", "remove", "staging")
    assert result.exit_code == 0 and result.stdout.splitlines() == ["removed context staging", "current context: local"]
    assert [c["name"] for c in json.loads(invoke("context", "list", "--json").stdout)] == ["local", "ci"]
    assert SECRET not in (isolated / "cfg" / "config.toml").read_text()


def test_show_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    invoke("context", "add", "staging", "--url", "https://g.example", "--token-env", "STAGING_TOKEN")
    monkeypatch.setenv("FLOWMETAL_CONTEXT", "staging")
    assert json.loads(invoke("context", "show", "--json").stdout)["name"] == "staging"
    monkeypatch.setenv("FLOWMETAL_CONTEXT", "default")
    assert json.loads(invoke("context", "show", "--json").stdout)["name"] == "local"


def test_local_shows_whether_its_grid_runs(isolated: Path) -> None:
    assert "(local grid, not running)" in invoke("context", "show").stdout
    (isolated / "home").mkdir()
    (isolated / "home" / "grid.json").write_text(json.dumps({"url": "http://127.0.0.1:5555"}))
    assert "url:     http://127.0.0.1:5555" in invoke("context", "show", "local").stdout


@pytest.mark.parametrize("args", [
    ["context", "add", "x", "--url", "https://g", "--token-env", "A", "--token-file", "f"],
    ["context", "add", "local", "--url", "https://g", "--token-env", "A"],
    ["context", "add", "x", "--url", "nope", "--token-env", "A"],
    ["context", "use", "nope"],
    ["context", "remove", "local"],
    ["context", "remove", "nope"],
    ["context", "show", "nope"],
])
def test_refusals_exit_2_with_one_line(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_add_twice_needs_force() -> None:
    base = ["context", "add", "x", "--url", "https://one", "--token-env", "A"]
    assert invoke(*base).exit_code == 0
    again = invoke(*base)
    assert again.exit_code == 2 and "--force" in again.stderr
    assert invoke("context", "add", "x", "--url", "https://two", "--token-env", "A", "--force").exit_code == 0
    assert json.loads(invoke("context", "show", "x", "--json").stdout)["url"] == "https://two"


def test_add_without_a_token() -> None:
    result = invoke("context", "add", "open", "--url", "http://127.0.0.1:9")
    assert result.exit_code == 0 and result.stdout.strip() == "added context open (http://127.0.0.1:9, no token)"
    assert json.loads(invoke("context", "show", "open", "--json").stdout)["token"] is None
