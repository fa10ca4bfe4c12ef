"""Contexts: the config file, how a context is chosen, and tokens read only when used."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

import pytest

from flowmetal_cli import contexts
from flowmetal_cli.contexts import (
    Config,
    ContextError,
    add_context,
    config_path,
    remove_context,
    resolve_context,
    use_context,
)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "config" / "flowmetal.toml"
    monkeypatch.setenv("FLOWMETAL_CONFIG", str(config))
    monkeypatch.setenv("FLOWMETAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FLOWMETAL_CONTEXT", raising=False)
    return config


def test_config_path_honours_the_environment(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_path() == isolated
    monkeypatch.delenv("FLOWMETAL_CONFIG")
    assert config_path().name == "config.toml" and "flowmetal" in str(config_path())


def test_local_is_built_in_and_current_by_default(isolated: Path) -> None:
    context = resolve_context(None)
    assert context.name == "local" and context.is_local and context.url is None
    assert context.token() is None
    assert resolve_context("default").name == "local"
    assert [c.name for c in Config.load().all()] == ["local"]
    assert not isolated.exists()  # reading never writes


def test_local_url_comes_from_the_local_grid_state(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "grid.json").write_text(json.dumps({"status": "ready", "url": "http://127.0.0.1:4321"}))
    assert resolve_context("local").url == "http://127.0.0.1:4321"
    (home / "grid.json").write_text("{garbage")
    assert resolve_context("local").url is None


def test_add_use_remove(isolated: Path) -> None:
    added = add_context("staging", "https://grid.example.com/", token_env="STAGING_TOKEN")
    assert added.url == "https://grid.example.com"
    add_context("prod", "http://10.0.0.1:8765", token_file="tok.txt")
    assert [c.name for c in Config.load().all()] == ["local", "prod", "staging"]
    assert Config.load().current == "local"

    use_context("staging")
    assert resolve_context(None).name == "staging"
    assert resolve_context("default").name == "staging"
    assert resolve_context("prod").name == "prod"

    assert remove_context("staging") is True  # it was current: local is current again
    assert resolve_context(None).name == "local"
    assert remove_context("prod") is False
    assert [c.name for c in Config.load().all()] == ["local"]


def test_context_choice_order(monkeypatch: pytest.MonkeyPatch) -> None:
    add_context("a", "http://a.example", token_env="A_TOKEN")
    add_context("b", "http://b.example", token_env="B_TOKEN")
    use_context("a")
    assert resolve_context(None).name == "a"
    monkeypatch.setenv("FLOWMETAL_CONTEXT", "b")
    assert resolve_context(None).name == "b"  # the environment beats the current context
    assert resolve_context("local").name == "local"  # --context beats the environment
    monkeypatch.setenv("FLOWMETAL_CONTEXT", "default")
    assert resolve_context(None).name == "a"


def test_config_file_is_toml_with_no_token_and_private(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGING_TOKEN", "s3cr3t-value")
    add_context("staging", "https://grid.example.com", token_env="STAGING_TOKEN")
    text = isolated.read_text()
    assert "s3cr3t-value" not in text
    assert tomllib.loads(text) == {
        "current": "local",
        "contexts": {"staging": {"url": "https://grid.example.com", "token_env": "STAGING_TOKEN"}},
    }
    assert stat.S_IMODE(os.stat(isolated).st_mode) == 0o600


def test_token_from_env_is_read_when_used(monkeypatch: pytest.MonkeyPatch) -> None:
    context = add_context("staging", "https://grid.example.com", token_env="STAGING_TOKEN")
    assert context.token_source == "env:STAGING_TOKEN"
    with pytest.raises(ContextError, match="STAGING_TOKEN holding its token is not set"):
        context.token()
    monkeypatch.setenv("STAGING_TOKEN", "  abc  ")
    assert resolve_context("staging").token() == "abc"


def test_token_from_file_is_read_when_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    context = add_context("ci", "http://127.0.0.1:9000", token_file="ci.token")
    assert context.token_file == str((tmp_path / "ci.token").resolve())  # stored absolute
    assert context.token_source == f"file:{tmp_path.resolve() / 'ci.token'}"
    with pytest.raises(ContextError, match="cannot read its token file"):
        context.token()
    (tmp_path / "ci.token").write_text("")
    with pytest.raises(ContextError, match="is empty"):
        context.token()
    (tmp_path / "ci.token").write_text("tok-1\nsecond line ignored\n")
    assert resolve_context("ci").token() == "tok-1"
    (tmp_path / "ci.token").write_text("tok-2\n")  # read each time, never cached
    assert resolve_context("ci").token() == "tok-2"


@pytest.mark.parametrize(("name", "url", "env", "file", "message"), [
    ("local", "http://x", "T", None, "reserved"),
    ("default", "http://x", "T", None, "reserved"),
    ("bad name", "http://x", "T", None, "invalid context name"),
    ("ok", "ftp://x", "T", None, "invalid URL"),
    ("ok", "grid.example.com", "T", None, "invalid URL"),
    ("ok", "http://x", "T", "f", "not both"),
    ("ok", "http://x", "1BAD", None, "invalid environment variable"),
])
def test_add_refusals(name: str, url: str, env: str | None, file: str | None, message: str) -> None:
    with pytest.raises(ContextError, match=message):
        add_context(name, url, token_env=env, token_file=file)


def test_add_existing_needs_replace() -> None:
    add_context("s", "http://one", token_env="T")
    with pytest.raises(ContextError, match="already exists"):
        add_context("s", "http://two", token_env="T")
    assert add_context("s", "http://two", token_env="T", replace=True).url == "http://two"
    assert resolve_context("s").url == "http://two"


def test_unknown_and_builtin_refusals() -> None:
    with pytest.raises(ContextError, match="no context named 'nope'"):
        resolve_context("nope")
    with pytest.raises(ContextError, match="no context named 'nope'"):
        use_context("nope")
    with pytest.raises(ContextError, match="built in"):
        remove_context("local")
    with pytest.raises(ContextError, match="no context named 'nope'"):
        remove_context("nope")


def test_a_broken_config_is_one_clear_error(isolated: Path) -> None:
    isolated.parent.mkdir(parents=True)
    isolated.write_text("current = \n")
    with pytest.raises(ContextError, match="cannot read the config file"):
        resolve_context(None)
    isolated.write_text('[contexts.x]\nurl = 3\n')
    with pytest.raises(ContextError, match=r"\[contexts.x\] needs url"):
        resolve_context(None)


def test_names_with_odd_characters_round_trip(isolated: Path) -> None:
    add_context("team.eu-1_a", "http://grid.example/path", token_file="/tmp/a \"quoted\" path")
    assert resolve_context("team.eu-1_a").token_file == '/tmp/a "quoted" path'
    assert contexts.Config.load().get("team.eu-1_a").url == "http://grid.example/path"


def test_a_context_without_a_token() -> None:
    context = add_context("open", "http://127.0.0.1:9999")
    assert context.token_source is None and context.token() is None
    assert resolve_context("open").url == "http://127.0.0.1:9999"
