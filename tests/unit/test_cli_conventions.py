"""The terminal's conventions: --version, colours only on a terminal and never with NO_COLOR or
--no-color (checked on a real pseudo-terminal), --json on every listing command."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowmetal_cli import docgen
from flowmetal_cli.main import app
from tests.helpers import write_file

runner = CliRunner()
ANSI = "\x1b["
# Every command that lists or reports things a script would parse.
LISTING_COMMANDS = ("ps", "deployments", "inspect", "check", "bundle", "new", "grid status", "context list", "hook list",
                    "context show")


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("flowmetal ") and "prelude v1" in result.stdout


def _on_a_terminal(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run the CLI with stdout and stderr on a pseudo-terminal; everything it wrote."""
    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "flowmetal_cli", *args], cwd=cwd, env=env,
                               stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
    finally:
        process.kill()
        process.wait()
        os.close(master)
    return output.decode("utf-8", "replace")


@pytest.fixture
def broken_script(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    write_file(tmp_path, "flowmetal.toml", "")
    write_file(tmp_path, "main.flow", "x = sum([1])\n")
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update(FLOWMETAL_HOME=str(tmp_path / "home"), FLOWMETAL_CONFIG=str(tmp_path / "config.toml"),
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return tmp_path, env


def test_colours_on_a_terminal_unless_no_color_or_the_flag(broken_script: tuple[Path, dict[str, str]]) -> None:
    folder, env = broken_script
    coloured = _on_a_terminal(["check", "main.flow"], folder, env)
    assert "undefined name `sum`" in coloured and ANSI in coloured
    for args, extra in ((["check", "main.flow"], {"NO_COLOR": "1"}), (["--no-color", "check", "main.flow"], {})):
        plain = _on_a_terminal(args, folder, {**env, **extra})
        assert "undefined name `sum`" in plain
        assert ANSI not in plain, args
    # run's errors too (the console helper every command uses)
    plain = _on_a_terminal(["--no-color", "run", "main.flow"], folder, env)
    assert "error: main.flow:1:5: undefined name `sum`" in plain and ANSI not in plain


def test_no_color_reaches_the_tui(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--no-color` sets NO_COLOR for the process, which Textual honours when the TUI starts."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    result = runner.invoke(app, ["--no-color", "context", "list"])
    assert result.exit_code == 0
    assert os.environ.get("NO_COLOR") == "1"
    from tui.app import FlowmetalApp

    def no_grid() -> None:
        raise AssertionError("not connected in this test")

    assert FlowmetalApp(no_grid).no_color  # type: ignore[arg-type]
    monkeypatch.delenv("NO_COLOR")
    assert not FlowmetalApp(no_grid).no_color  # type: ignore[arg-type]


def test_every_listing_command_takes_json() -> None:
    by_name = {c.name: c for c in docgen.commands()}
    missing = [name for name in LISTING_COMMANDS
               if not any("--json" in names for names, _ in by_name[f"flowmetal {name}"].params)]
    assert missing == []
