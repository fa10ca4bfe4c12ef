"""`flowmetal context list|add|use|remove|show`: the named grids this tool talks to."""

from __future__ import annotations

from typing import Annotated

import typer

from flowmetal_cli import console
from flowmetal_cli.contexts import (
    LOCAL,
    Config,
    Context,
    add_context,
    config_path,
    remove_context,
    resolve_context,
    use_context,
)
from grid_local.errors import FlowmetalError

context_app = typer.Typer(
    help="Manage contexts: named grids (URL and where their token is). 'local' is built in.\n\n"
    "Which one a command uses: --context NAME, else $FLOWMETAL_CONTEXT, else the current one "
    "('default' names the current one). The config file is $FLOWMETAL_CONFIG, else config.toml "
    "in your user config directory.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print as JSON.")]


def _url(context: Context) -> str:
    if context.url:
        return context.url
    return "(local grid, not running)" if context.is_local else "-"


@context_app.command("list")
def list_contexts(json_: JsonOption = False) -> None:
    """List contexts; the current one is marked with *.

    Examples:

        flowmetal context list

        flowmetal context list --json
    """
    try:
        config = Config.load()
        contexts = config.all()
    except FlowmetalError as exc:
        console.fail(str(exc), console.EXIT_USAGE)
    if json_:
        console.print_json([c.to_json(current=c.name == config.current) for c in contexts])
        return
    rows = [("", "NAME", "URL", "TOKEN")]
    rows += [("*" if c.name == config.current else "", c.name, _url(c), c.token_source or "-") for c in contexts]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@context_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Name of the new context.", show_default=False)],
    url: Annotated[str, typer.Option("--url", help="The grid's Client API URL.", show_default=False)],
    token_env: Annotated[
        str | None, typer.Option("--token-env", metavar="VAR", help="Read the token from this environment variable.")
    ] = None,
    token_file: Annotated[
        str | None, typer.Option("--token-file", metavar="PATH", help="Read the token from this file (first line).")
    ] = None,
    use: Annotated[bool, typer.Option("--use", help="Make it the current context.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a context of the same name.")] = False,
) -> None:
    """Add a context: a grid URL and where its token is (never the token itself).

    The token is read each time a command talks to that grid. A grid that requires no token
    (one on loopback without --tokens) needs neither option.

    Examples:

        flowmetal context add staging --url https://grid.example.com --token-env STAGING_TOKEN

        flowmetal context add ci --url http://10.0.0.5:8765 --token-file ~/.config/flowmetal/ci.token --use
    """
    try:
        context = add_context(name, url, token_env, token_file, replace=force)
        if use:
            use_context(name)
    except FlowmetalError as exc:
        console.fail(str(exc), console.EXIT_USAGE)
    token = f"token from {context.token_source}" if context.token_source else "no token"
    typer.echo(f"added context {context.name} ({context.url}, {token})")
    if use:
        typer.echo(f"current context: {context.name}")


@context_app.command("use")
def use(name: Annotated[str, typer.Argument(help="The context to make current.", show_default=False)]) -> None:
    """Make a context the current one.

    Examples:

        flowmetal context use staging

        flowmetal context use local
    """
    try:
        context = use_context(name)
    except FlowmetalError as exc:
        console.fail(str(exc), console.EXIT_USAGE)
    typer.echo(f"current context: {context.name}")


@context_app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="The context to remove.", show_default=False)]) -> None:
    """Remove a context ('local' is built in and stays).

    Examples:

        flowmetal context remove staging
    """
    try:
        was_current = remove_context(name)
    except FlowmetalError as exc:
        console.fail(str(exc), console.EXIT_USAGE)
    typer.echo(f"removed context {name}")
    if was_current:
        typer.echo(f"current context: {LOCAL}")


@context_app.command("show")
def show(
    name: Annotated[
        str | None,
        typer.Argument(help="The context to show (default: the one commands would use).", show_default=False),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Show a context: its URL and where its token comes from (never the token).

    Examples:

        flowmetal context show

        FLOWMETAL_CONTEXT=staging flowmetal context show --json
    """
    try:
        config = Config.load()
        context = resolve_context(name)
    except FlowmetalError as exc:
        console.fail(str(exc), console.EXIT_USAGE)
    if json_:
        value = context.to_json(current=context.name == config.current)
        value["config"] = str(config_path())
        console.print_json(value)
        return
    typer.echo(f"name:    {context.name}{'  (current)' if context.name == config.current else ''}")
    typer.echo(f"url:     {_url(context)}")
    typer.echo(f"token:   {context.token_source or '-'}")
    typer.echo(f"config:  {config_path()}")


def register(app: typer.Typer) -> None:
    app.add_typer(context_app, name="context")
