"""`flowmetal why ID`: why a flow is not running now, in one line."""

from __future__ import annotations

from typing import Annotated

import typer

from flowmetal_cli import console
from flowmetal_cli.commands.run import ContextOption
from flowmetal_cli.connect import connect


def why(
    flow_id: Annotated[str, typer.Argument(help="The flow.")],
    context: ContextOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Why a flow is not running now: waiting for quota, a child, a timer, a message or a worker slot.

    Examples:

      flowmetal why 3f2a9c1d0b7e
    """
    with console.edge():
        with connect(context) as client:
            answer = client.why(flow_id)
    if json_output:
        console.print_json(answer)
        return
    typer.echo(answer["reason"])


def register(app: typer.Typer) -> None:
    app.command("why")(why)
