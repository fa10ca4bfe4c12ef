"""`flowmetal check`: parse, lint and type-check scripts and everything they load, without running."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flowmetal_cli import console
from flowmetal_cli.checker import ERROR, check_paths
from grid_local.errors import FlowmetalError


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def check(
    files: Annotated[list[Path], typer.Argument(help="Scripts to check (.flow or .star).", show_default=False)],
    json_: Annotated[bool, typer.Option("--json", help="Print the problems as JSON.")] = False,
) -> None:
    """Parse, lint and type-check scripts and every file they load.

    Every problem is printed as file:line:col: error|warning: message, followed by a
    hint line saying what to write instead when there is one. Besides parse, lint and
    type errors, check reports names defined nowhere, unused loads, calls to a flow with
    arguments its `args` do not declare (or literal values of the wrong type, or without a
    required one), `fctx.<field>` on the prelude function instead of a flow context,
    unknown actions, and actions or flow calls at module top level outside
    `if __name__ == "__flow__":`. Exit code 1 when there is an error; lint warnings alone
    exit 0.

    Examples:

        flowmetal check main.flow

        flowmetal check main.flow lib/*.star --json
    """
    try:
        report = check_paths(files)
    except FlowmetalError as exc:
        console.fail(str(exc), console.EXIT_USAGE)
    if json_:
        console.print_json(report.to_json())
    else:
        colour = console.use_colour()
        for problem in report.problems:
            line = str(problem)
            if colour:
                line = typer.style(line, fg="red" if problem.severity == ERROR else "yellow")
            typer.echo(line)
            if problem.hint:
                typer.echo(f"    hint: {problem.hint}")
        console.info(
            f"{_plural(len(report.errors), 'error')}, {_plural(len(report.warnings), 'warning')} "
            f"in {_plural(len(report.files), 'file')}"
        )
    if report.errors:
        raise typer.Exit(console.EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("check")(check)
