"""Terminal output conventions: one-line errors with exit codes, colour only on a TTY and without NO_COLOR."""

from __future__ import annotations

import json
import os
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


def use_colour(stream: Any = None) -> bool:
    """Colours only on a terminal, and never when NO_COLOR is set (https://no-color.org; `--no-color` sets it)."""
    return is_tty(stream) and not os.environ.get("NO_COLOR")


def error(message: str) -> None:
    """One line on stderr (red on a colour terminal)."""
    text = f"error: {message}"
    # secho would add a reset code even without a colour: plain echo when there is none.
    typer.echo(typer.style(text, fg="red") if use_colour(sys.stderr) else text, err=True)


def info(message: str) -> None:
    typer.echo(message, err=True)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    error(message)
    raise typer.Exit(code)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))


def exit_code_of(exc: BaseException) -> int:
    """The documented exit code for an expected error."""
    from grid_local.errors import ArgumentError, BundleError, ScriptError

    code = getattr(exc, "exit_code", None)
    if isinstance(code, int):
        return code
    if isinstance(exc, (BundleError, ScriptError, ArgumentError)):
        return EXIT_USAGE
    if type(exc).__name__ == "ContextError":
        return EXIT_USAGE
    return EXIT_FAILED


class edge:
    """``with edge():`` turns expected errors into one line on stderr and their exit code."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        from grid_local.errors import FlowmetalError

        if isinstance(exc, FlowmetalError):
            error(str(exc))
            snippet = getattr(exc, "snippet", "")
            if snippet:
                typer.echo(snippet, err=True)
            raise typer.Exit(exit_code_of(exc))


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``: sizes in a column or a line."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 10 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.0f} GiB"
