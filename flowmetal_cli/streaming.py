"""Following a flow tree's events: its log lines as they are printed, until the root finishes.

The grid may go away and come back (a restart, `grid down` then `grid up`): the stream then
reconnects through ``reconnect`` (which may find the grid at a new URL) and goes on from its cursor.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import typer

from flowmetal_cli.client import GridClient, GridUnreachable
from flowmetal_cli.console import use_colour

FINISHED = ("completed", "failed", "cancelled")
_COLOURS = ["cyan", "magenta", "yellow", "green", "blue", "bright_cyan", "bright_magenta"]


class LogPrinter:
    """The root's lines as printed; a child's lines prefixed with its name, as `docker compose` does."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.colour = use_colour(sys.stdout)
        self._colours: dict[str, str] = {}

    def line(self, event: dict[str, Any]) -> None:
        text = str(event.get("text", ""))
        to_stderr = event.get("stream") == "_stderr"
        if event["flow_id"] == self.root:
            typer.echo(text, err=to_stderr)
            return
        name = str(event.get("name") or event["flow_id"])
        prefix = f"{name} | "
        if self.colour:
            colour = self._colours.setdefault(event["flow_id"], _COLOURS[len(self._colours) % len(_COLOURS)])
            prefix = typer.style(prefix, fg=colour)
        typer.echo(prefix + text, err=to_stderr)


def follow(
    client: GridClient, root: str, reconnect: Callable[[], GridClient] | None = None, give_up_after: float = 120.0,
    follow_to_end: bool = True,
) -> tuple[dict[str, Any] | None, GridClient]:
    """Print the tree's log until the root finishes; returns the root's final record (None if not following)."""
    printer = LogPrinter(root)
    cursor = 0
    lost_since: float | None = None
    while True:
        try:
            page = client.events(after=cursor, root=root, wait=10 if follow_to_end else 0)
            lost_since = None
        except GridUnreachable:
            if reconnect is None:
                raise
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > give_up_after:
                raise
            time.sleep(0.5)
            try:
                fresh = reconnect()  # the grid may be back at another URL
            except GridUnreachable:
                continue
            client.close()
            client = fresh
            continue
        finished = None
        for event in page["events"]:
            if event["type"] == "log":
                printer.line(event)
            elif event["type"] == "flow" and event["flow_id"] == root and event.get("status") in FINISHED:
                finished = event
        cursor = page["cursor"]
        if finished is not None:
            return client.get_flow(root), client
        if not follow_to_end and not page["events"]:
            return None, client
