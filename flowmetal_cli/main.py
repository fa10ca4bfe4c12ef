"""The `flowmetal` Typer app: wires each verb module in ``flowmetal_cli.commands``."""

from __future__ import annotations

import importlib
import os
import platform
from importlib import metadata
from typing import Annotated

import typer

from grid_local.runtime.sources import PRELUDE_VERSION

HELP = """Write, bundle, run, debug and ship durable Starlark flows.

Exit codes: 0 ok; 1 flow failed or check errors; 2 usage or bundle errors (an unknown
flow id too); 3 grid unreachable; 4 refused (token or quota).

Environment: FLOWMETAL_HOME (the local grid's state), FLOWMETAL_CONFIG (the
contexts file), FLOWMETAL_CONTEXT (the context when --context is not given),
NO_COLOR (no colours, as --no-color), DOCKER_HOST (the Docker Engine of the
local grid's containers), and the variables a context's --token-env or a hook's
--secret-env names. Documentation: docs/README.md.
"""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False)


def version_text() -> str:
    try:
        version = metadata.version("flowmetal")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"flowmetal {version} (prelude {PRELUDE_VERSION}, Python {platform.python_version()})"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="No colours in the output (as NO_COLOR=1).")] = False,
) -> None:
    if no_color:
        # The environment carries it to the TUI (Textual honours NO_COLOR) and to grid processes.
        os.environ["NO_COLOR"] = "1"

# Each module exposes register(app). Order is the order of `flowmetal --help`.
COMMAND_MODULES = [
    "run",
    "new",
    "bundle",
    "check",
    "push",
    "hook",
    "schedule",
    "flows",
    "why",
    "quota",
    "secret",
    "grid",
    "worker",
    "connector",
    "context",
    "tui",
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"flowmetal_cli.commands.{_name}").register(app)
