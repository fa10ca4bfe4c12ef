"""`flowmetal connector NAME`: one of the grid's connectors on any machine that reaches its Worker API."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer

from flowmetal_cli import console
from flowmetal_cli.commands.worker import TOKEN_HELP, URL_HELP, become, worker_api_token, worker_api_urls
from grid_local.home import GridPaths

CONNECTORS = ("clock", "http", "inbox", "resources")


def connector(
    name: Annotated[str, typer.Argument(help=f"Which connector: {', '.join(CONNECTORS)}.")],
    url: Annotated[str, typer.Option("--url", help=URL_HELP)],
    token_file: Annotated[Path | None, typer.Option("--token-file", help=TOKEN_HELP, dir_okay=False)] = None,
    label: Annotated[str | None, typer.Option("--name", help="How the grid knows this process (its pid is added); the default names the connector and this host.")] = None,
) -> None:
    """Run a connector for a grid whose Worker API is reachable from here (until stopped).

    http performs flows' HTTP requests from this machine's network; resources runs exec, workspaces
    and containers here (under this machine's FLOWMETAL_HOME); clock fires timers and schedules;
    inbox delivers messages. Several of a kind may run at once: each request is leased to one.
    Stopped (SIGTERM), the requests it was performing are declared interrupted at once; killed,
    when their leases expire.

    Exit codes: 2 usage; 4 the Worker API refused the token.

    Examples:

      flowmetal connector http --url http://grid.example.com:8471 --token-file worker-api.token

      flowmetal connector resources --url http://10.0.0.5:8471,http://10.0.0.6:8471 --token-file worker-api.token
    """
    if name not in CONNECTORS:
        console.fail(f"no connector '{name}': choose {', '.join(CONNECTORS)}", console.EXIT_USAGE)
    urls = worker_api_urls(url)
    token = worker_api_token(token_file)
    home = GridPaths.current().home
    home.mkdir(parents=True, exist_ok=True)
    console.info(f"connector {name}: serving the Worker API at {', '.join(urls)}")
    become(f"grid_local.connectors.{name}",
           ["--api", ",".join(urls), "--name", label or f"{name}-{socket.gethostname()}", "--home", str(home)], token)


def register(app: typer.Typer) -> None:
    app.command("connector")(connector)
