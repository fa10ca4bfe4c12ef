"""What every connector process shares: its identity, the Worker API client, and its command line.

Connectors outlive the Worker API restarting under them: a result is recorded with retries until
the API is back (never dropped), and each claim says which requests this process still holds, so
that a claim whose answer was lost with the API hands its requests back (unperformed) at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from grid_local.api.wire import WireClient, WireError, exit_if_refused, until_answered
from grid_local.errors import ArgumentError
from grid_local.isolation import Isolation
from grid_local.runtime import journal as jr
from grid_local.secret_refs import mask, substitute


def connector_args(role: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"flowmetal-{role}", description=f"The Flowmetal {role} connector.")
    parser.add_argument("--api", required=True, help="Worker API base URL, or several: URL,URL2,... (replicas)")
    parser.add_argument("--name", default=role)
    parser.add_argument("--home", default=None, help="The grid's FLOWMETAL_HOME (for connectors keeping files)")
    Isolation.add_arguments(parser)
    options = parser.parse_args(argv)
    options.executor = f"{options.name}.{os.getpid()}"

    def leave(*_: Any) -> None:
        """Stopped: hand back what it holds now (its requests declared interrupted) rather than at
        lease expiry; a fresh client, since the signal may land in the middle of a call."""
        with contextlib.suppress(WireError):
            WireClient(options.api, timeout=2.0, patience=0).post(f"/v1/connectors/{options.executor}/gone")
        os._exit(0)

    signal.signal(signal.SIGTERM, leave)
    return options


def api_client(url: str, who: str = "") -> WireClient:
    """The connector's Worker API client; a refused credential ends the process (exit 4)."""
    return WireClient(url, who=who)


def check_in(api: WireClient, who: str) -> None:
    """The first call, before serving: retried while no Worker API answers; a 401 exits at once."""
    try:
        until_answered(lambda: api.get("/v1/workers"), who)
    except WireError as exc:
        exit_if_refused(exc, who)
        raise


def grid_policy(api: WireClient, options: argparse.Namespace, who: str) -> Isolation:
    """The grid's isolation policy, from its Worker API (retried while none answers): a connector
    applies it wherever it runs; its own flags can only make it stricter."""
    try:
        described = until_answered(lambda: api.get("/v1/connectors/policy"), who)
    except WireError as exc:
        exit_if_refused(exc, who)
        if exc.status == 404:  # fail closed: never guess a policy
            raise SystemExit(f"{who}: the Worker API does not say the grid's isolation policy "
                             "(/v1/connectors/policy): run a connector of the grid's own version") from None
        raise
    return Isolation.from_grid(described, options)


def record(client: WireClient, flow_id: str, seq: int, result: dict[str, Any], executor: str | None,
           kind: str = "request") -> None:
    """Record a request's result, retried until the Worker API takes it; one over the journal's size
    limit is recorded as an error that says so."""
    try:
        jr.check_size(jr.canonical_json(result.get("value")), f"the result of {kind}")
    except ArgumentError as exc:
        result = jr.err(str(exc))
    until_answered(lambda: client.post(
        "/v1/connectors/results", {"flow_id": flow_id, "seq": seq, "result": result, "executor": executor},
    ), executor or "connector")


def with_secrets(perform: Callable[[dict[str, Any]], dict[str, Any]], request: dict[str, Any]) -> dict[str, Any]:
    """Perform a request with its secret references replaced by their values, and the values masked
    out of the result before it is recorded (the values live only in this call)."""
    if request.get("secret_error"):
        return jr.err(f"{request['kind']}: {request['secret_error']}")
    values = request.get("secrets") or {}
    if not values:
        return perform(request)
    return mask(perform({**request, "args": substitute(request["args"], values)}), values)  # type: ignore[no-any-return]


def serve_requests(
    api: WireClient, kinds: tuple[str, ...], executor: str, perform: Callable[[dict[str, Any]], dict[str, Any]],
    concurrency: int,
) -> None:
    """Claim requests of these kinds (long poll), perform each in a thread, record its result. Forever."""
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=executor)
    holding: set[tuple[str, int]] = set()
    lock = threading.Lock()

    def run(request: dict[str, Any]) -> None:
        try:
            record(api, request["flow_id"], request["seq"], with_secrets(perform, request), executor, request["kind"])
        finally:
            with lock:
                holding.discard((request["flow_id"], request["seq"]))

    while True:
        with lock:
            held = [list(key) for key in holding]
        try:
            claimed = api.post(f"/v1/connectors/requests/{','.join(kinds)}/claim",
                               {"executor": executor, "limit": concurrency, "wait": 10, "holding": held})
        except WireError as exc:
            exit_if_refused(exc, executor)
            if exc.status == 409:  # declared gone: make way for a new incarnation
                os._exit(3)
            time.sleep(0.2)
            continue
        for request in claimed["requests"]:
            with lock:
                holding.add((request["flow_id"], request["seq"]))
            pool.submit(run, request)
