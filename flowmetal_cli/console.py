"""Terminal output conventions: one-line errors with exit codes, colour only on a TTY."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer

# Exit codes (documented in `flowmetal --help`).
EXIT_OK = 0
EXIT_FAILED = 1  # the flow failed, or check found errors
EXIT_USAGE = 2  # usage or bundle errors
EXIT_UNREACHABLE = 3  # the grid could not be reached
EXIT_REFUSED = 4  # refused: token or quota


def is_tty(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def error(message: str) -> None:
    """One line on stderr (red on a TTY)."""
    typer.secho(f"error: {message}", err=True, fg="red" if is_tty(sys.stderr) else None)


def info(message: str) -> None:
    typer.echo(message, err=True)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    error(message)
    raise typer.Exit(code)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))
