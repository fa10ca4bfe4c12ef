"""`flowmetal run --virtual-clock`: a flow on a grid of its own, with a virtual clock, gone afterwards.

The grid lives in a temporary FLOWMETAL_HOME: it starts, runs the one flow (time jumping over every
sleep and timeout while nothing else can happen), and is stopped and removed, whatever the outcome.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from flowmetal_cli import console
from flowmetal_cli.bundle import build_bundle
from flowmetal_cli.client import GridClient, GridUnreachable
from flowmetal_cli.streaming import follow
from grid_local.home import GridPaths
from grid_local.supervisor import start_background, stop_background


def run_with_virtual_clock(file: Path, args: dict[str, Any]) -> int:
    from flowmetal_cli.checker import refuse_check_errors
    from flowmetal_cli.commands.run import report_outcome, upload

    refuse_check_errors(file)
    built = build_bundle(file)
    paths = GridPaths(Path(tempfile.mkdtemp(prefix="flowmetal-virtual-")))
    try:
        try:
            state = start_background(paths, workers=2, clock="virtual")
        except RuntimeError as exc:
            raise GridUnreachable(f"could not start an ephemeral grid: {exc}") from None
        console.info(f"started an ephemeral grid with a virtual clock at {state['url']}")
        client = GridClient(state["url"], context="virtual")
        upload(client, built)
        flow = client.start_flow(built.digest, args, name=file.name)
        final, client = follow(client, flow["id"], reconnect=lambda: GridClient(state["url"], context="virtual"))
        client.close()
        assert final is not None
        return report_outcome(final)
    finally:
        stop_background(paths)
        shutil.rmtree(paths.home, ignore_errors=True)
