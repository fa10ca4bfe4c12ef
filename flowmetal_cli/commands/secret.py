"""`flowmetal secret set | list | rm`: secrets of a quota node, encrypted at rest, granted to flows by name.

A value is read from stdin (the default), a file or an environment variable, never from the command
line (where `ps` and shell history would show it). Nothing ever prints a value back.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from flowmetal_cli import console
from flowmetal_cli.commands.run import ContextOption
from flowmetal_cli.connect import connect
from grid_local.errors import ArgumentError

secret_app = typer.Typer(help="Secrets: values flows use through references (fctx.secrets.NAME), never see.",
                         no_args_is_help=True)

QuotaOption = Annotated[str | None, typer.Option("--quota", metavar="NODE",
                                                 help="The quota node it belongs to (default: yours).")]


def read_value(from_env: str | None, from_file: Path | None) -> str:
    """The value: from an environment variable, a file (trailing newline dropped), else all of stdin."""
    if from_env and from_file:
        raise ArgumentError("give --from-env or --from-file, not both")
    if from_env:
        value = os.environ.get(from_env)
        if not value:
            raise ArgumentError(f"--from-env {from_env}: the environment variable is not set or empty")
        return value
    if from_file:
        try:
            value = from_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ArgumentError(f"--from-file {from_file}: cannot read it: {exc.strerror or exc}") from None
    else:
        if sys.stdin.isatty():
            console.info("reading the secret's value from stdin (end with Ctrl-D)")
        value = sys.stdin.read().rstrip("\r\n")
    if not value:
        raise ArgumentError("the secret's value is empty")
    return value


def set_secret(
    name: Annotated[str, typer.Argument(help="The secret's name, as flows grant it: secrets = {\"alias\": NAME}.")],
    quota: QuotaOption = None,
    from_env: Annotated[str | None, typer.Option("--from-env", metavar="VAR",
                                                 help="Read the value from this environment variable.")] = None,
    from_file: Annotated[Path | None, typer.Option("--from-file", metavar="FILE", dir_okay=False,
                                                   help="Read the value from this file.")] = None,
    context: ContextOption = None,
) -> None:
    """Set (or replace) a secret; its value comes from stdin unless --from-env or --from-file says.

    Examples:

      printf %s "$GITHUB_TOKEN" | flowmetal secret set github-token

      flowmetal secret set github-token --from-env GITHUB_TOKEN --quota /acme/ci
    """
    with console.edge():
        value = read_value(from_env, from_file)
        with connect(context) as client:
            answer = client.secret_set(name, value, quota)
    typer.echo(f"set secret {answer['name']} at {answer['quota']}")


def list_secrets(
    context: ContextOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The secrets of your subtree: names, nodes and who set them (never values).

    Examples:

      flowmetal secret list

      flowmetal secret list --json
    """
    with console.edge():
        with connect(context) as client:
            found = client.secrets()
    if json_output:
        console.print_json(found)
        return
    typer.echo(f"{'NAME':<32}{'QUOTA':<24}SET BY")
    for item in found:
        typer.echo(f"{item['name']:<32}{item['quota']:<24}{item['set_by']}")


def remove_secret(
    name: Annotated[str, typer.Argument(help="The secret's name.")],
    quota: QuotaOption = None,
    context: ContextOption = None,
) -> None:
    """Remove a secret (flows already granted it fail their next action that uses it).

    Examples:

      flowmetal secret rm github-token
    """
    with console.edge():
        with connect(context) as client:
            answer = client.secret_remove(name, quota)
    typer.echo(f"removed secret {answer['removed']} at {answer['quota']}")


secret_app.command("set")(set_secret)
secret_app.command("list")(list_secrets)
secret_app.command("rm")(remove_secret)


def register(app: typer.Typer) -> None:
    app.add_typer(secret_app, name="secret")
