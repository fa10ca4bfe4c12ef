"""`flowmetal tui`: open the interactive debugger on a context's grid (optionally running a script first)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flowmetal_cli import console
from flowmetal_cli.connect import connect


def tui(
    file: Annotated[
        Path | None,
        typer.Argument(help="A .flow script to bundle, start and select when the debugger opens.", show_default=False),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option("--context", "-c", help="Context to use (default: $FLOWMETAL_CONTEXT, else the current one)."),
    ] = None,
    flow: Annotated[
        str | None, typer.Option("--flow", help="Select this flow id when the debugger opens.", show_default=False)
    ] = None,
) -> None:
    """Open the interactive debugger: flows, journals as timelines, replay stepping, failure injection.

    Shows the flows of a grid as a tree, the selected flow's journal (with where it resumed and what it replayed), its source with the line of each action, its log, the grid's workers, and the quota tree with usage bars against its limits and why each pending or waiting flow waits. From there: step through a journal, kill a worker, fail or delay a flow's next action, cancel, re-run, and push a bundle to another context. Press ? inside for every key.

    Starts the local grid in the background when none is running.

    Examples:

        flowmetal tui

        flowmetal tui main.flow

        flowmetal tui --context staging --flow 3f2a9c01b7de
    """
    if file is not None and not file.is_file():
        console.fail(f"no such file: {file}", console.EXIT_USAGE)
    with console.edge():
        connect(context, autostart=True).close()  # fail here, with the documented exit code, not inside the UI
    # The TUI is imported only for this command, so the rest of the CLI starts without Textual.
    from tui.app import FlowmetalApp

    app = FlowmetalApp(lambda: connect(context, autostart=False), open_file=file, select=flow)
    app.run()


def register(app: typer.Typer) -> None:
    app.command("tui")(tui)
