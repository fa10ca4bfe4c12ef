"""The `flowmetal` Typer app: wires each verb module in ``flowmetal_cli.commands``."""

from __future__ import annotations

import importlib

import typer

HELP = """Write, bundle, run, debug and ship durable Starlark flows.

Exit codes: 0 ok; 1 flow failed or check errors; 2 usage or bundle errors;
3 grid unreachable; 4 refused (token or quota).
"""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False)

# Each module exposes register(app). Order is the order of `flowmetal --help`.
COMMAND_MODULES = [
    "run",
    "new",
    "bundle",
    "check",
    "push",
    "hook",
    "flows",
    "grid",
    "context",
    "tui",
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"flowmetal_cli.commands.{_name}").register(app)
