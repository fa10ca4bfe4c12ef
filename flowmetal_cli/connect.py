"""From a context name to a connected GridClient, starting the local grid when it is needed."""

from __future__ import annotations

import time
from typing import Any

from flowmetal_cli.client import GridClient, GridUnreachable
from flowmetal_cli.console import info
from flowmetal_cli.contexts import Context, resolve_context
from grid_local.home import GridPaths, lock_holder
from grid_local.supervisor import running_state, start_background


def local_grid_url(autostart: bool) -> str:
    """The local grid's Client API URL; starts the grid in the background (and says so) when asked."""
    paths = GridPaths.current()
    state = running_state(paths)
    if state is None:
        if not autostart:
            raise GridUnreachable(f"no local grid is running for {paths.home} (start one: flowmetal grid up)")
        try:
            state = start_background(paths)
            info(f"started a local grid at {state['url']} (stop it with: flowmetal grid down)")
        except RuntimeError as exc:
            # Another command may have started it at the same moment: then use that one.
            state = _wait_for_grid(paths, timeout=30.0)
            if state is None:
                raise GridUnreachable(f"could not start the local grid: {exc}") from None
    if not state.get("url"):
        raise GridUnreachable(f"the local grid for {paths.home} runs no Client API (it was started with --only "
                              f"{','.join(state.get('components') or [])}): use a context for the grid's Client API")
    return str(state["url"])


def _wait_for_grid(paths: GridPaths, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = running_state(paths)
        if state is not None:
            return state
        if lock_holder(paths.lock) is None:
            return None  # nobody is starting one
        time.sleep(0.05)
    return None


def connect(context: str | None = None, autostart: bool = False) -> GridClient:
    ctx: Context = resolve_context(context)
    if ctx.is_local:
        return GridClient(local_grid_url(autostart), context=ctx.name)
    if not ctx.url:
        raise GridUnreachable(f"context '{ctx.name}' has no URL")
    return GridClient(ctx.url, token=ctx.token(), context=ctx.name)
