"""What every connector process shares: its identity, the Worker API client, and its command line."""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

from grid_local.api.wire import WireClient


def connector_args(role: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"flowmetal-{role}", description=f"The Flowmetal {role} connector.")
    parser.add_argument("--api", required=True, help="Worker API base URL")
    parser.add_argument("--name", default=role)
    parser.add_argument("--home", default=None, help="The grid's FLOWMETAL_HOME (for connectors keeping files)")
    options = parser.parse_args(argv)
    options.executor = f"{options.name}.{os.getpid()}"
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    return options


def api_client(url: str) -> WireClient:
    return WireClient(url)


def record(client: WireClient, flow_id: str, seq: int, result: dict[str, Any], executor: str | None) -> None:
    client.post("/v1/connectors/results", {"flow_id": flow_id, "seq": seq, "result": result, "executor": executor})
