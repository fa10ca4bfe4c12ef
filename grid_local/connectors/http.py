"""The HTTP connector: performs ``http`` actions with httpx, each under its request's timeout and the
grid's egress policy (``egress.py``: never the grid's own APIs; on a shared grid, no private address
outside ``--http-allow``; every redirect hop checked again).

A request is leased to this process when claimed. If the process dies before recording the
result, the request is declared failed ("interrupted") - never silently sent again.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx

from grid_local.connectors.base import api_client, check_in, connector_args, grid_policy, serve_requests
from grid_local.connectors.egress import EgressPolicy, OwnApis, PolicyTransport, Refused
from grid_local.runtime import journal as jr

MAX_BODY = 8 * 1024 * 1024
# Failure injection for crash tests: "before:<marker>" or "after:<marker>" SIGKILLs this process once
# (the marker file records that it happened) before or after performing a request.
CRASH_ENV = "FLOWMETAL_TEST_HTTP_CRASH"


def crash_point(point: str) -> None:
    when, _, marker = os.environ.get(CRASH_ENV, "").partition(":")
    if when == point and marker and not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os.kill(os.getpid(), signal.SIGKILL)


def perform(client: httpx.Client, args: dict[str, Any]) -> dict[str, Any]:
    try:
        response = client.request(
            args.get("method", "GET"), args["url"], headers=args.get("headers") or {},
            content=args.get("body"), json=args.get("json"), timeout=float(args.get("timeout") or 30),
        )
    except Refused as exc:  # the egress policy's one line
        return jr.err(str(exc))
    except httpx.TimeoutException:
        return jr.err(f"http: timeout after {args.get('timeout') or 30} s: {args.get('method')} {args['url']}")
    except httpx.HTTPError as exc:
        return jr.err(f"http: {type(exc).__name__}: {exc}")
    except (ValueError, KeyError, TypeError) as exc:
        return jr.err(f"http: bad request: {exc}")
    body = response.content[:MAX_BODY].decode("utf-8", errors="replace")
    value: dict[str, Any] = {"status": response.status_code, "headers": dict(response.headers), "body": body}
    if "json" in response.headers.get("content-type", ""):
        try:
            value["json"] = json.loads(body)
        except ValueError:
            value["json"] = None
    return jr.ok(value)


def main(argv: list[str] | None = None) -> None:
    options = connector_args("http", argv)
    api = api_client(options.api, options.executor)
    check_in(api, options.executor)
    isolation = grid_policy(api, options, options.executor)  # the grid's, wherever this runs
    policy = EgressPolicy(OwnApis(options.api, Path(options.home) if options.home else None),
                          shared=isolation.shared, allow=isolation.http_allow)
    outside = httpx.Client(follow_redirects=True, transport=PolicyTransport(policy))

    def run(request: dict[str, Any]) -> dict[str, Any]:
        crash_point("before")
        result = perform(outside, request["args"])
        crash_point("after")
        return result

    serve_requests(api, ("http",), options.executor, run, concurrency=16)


if __name__ == "__main__":
    main()
