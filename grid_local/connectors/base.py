"""What every connector process shares: its identity, the Worker API client, and its command line."""

from __future__ import annotations

import argparse
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from grid_local.api.wire import WireClient, WireError


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


def serve_requests(
    api: WireClient, kinds: tuple[str, ...], executor: str, perform: Callable[[dict[str, Any]], dict[str, Any]],
    concurrency: int,
) -> None:
    """Claim requests of these kinds (long poll), perform each in a thread, record its result. Forever."""
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=executor)

    def run(request: dict[str, Any]) -> None:
        record(api, request["flow_id"], request["seq"], perform(request), executor)

    while True:
        try:
            claimed = api.post(f"/v1/connectors/requests/{','.join(kinds)}/claim",
                               {"executor": executor, "limit": concurrency, "wait": 10})
        except WireError as exc:
            if exc.status == 409:  # declared gone: make way for a new incarnation
                os._exit(3)
            time.sleep(0.2)
            continue
        for request in claimed["requests"]:
            pool.submit(run, request)
