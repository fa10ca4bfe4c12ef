"""The HTTP connector: performs ``http`` actions with httpx, each under its request's timeout.

A request is leased to this process when claimed. If the process dies before recording the
result, the request is declared failed ("interrupted") - never silently sent again.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import httpx

from grid_local.api.wire import split_urls
from grid_local.connectors.base import api_client, check_in, connector_args, serve_requests
from grid_local.home import GridPaths
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


class OwnAddress(Exception):
    """A request (or a redirect) to one of this grid's own APIs: flows never reach those."""


class OwnApis:
    """The grid's own endpoints (its Worker API and Client API ports on any address of this machine),
    refused for every request and every redirect hop (an httpx request hook)."""

    def __init__(self, worker_urls: str, home: Path | None) -> None:
        self.worker_ports = {port for port in (httpx.URL(url).port for url in split_urls(worker_urls)) if port}
        self.paths = GridPaths(home) if home else None

    def ports(self) -> set[int]:
        ports = set(self.worker_ports)
        state = self.paths.read_state() if self.paths else None
        for url in [(state or {}).get("url"), *((state or {}).get("worker_urls") or [])]:
            port = httpx.URL(str(url or "http://x")).port
            if port:
                ports.add(port)
        return ports

    def check(self, request: httpx.Request) -> None:
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        if port not in self.ports():
            return
        try:
            infos = socket.getaddrinfo(request.url.host, port, proto=socket.IPPROTO_TCP)
        except OSError:
            return  # it cannot be reached at all; httpx says so
        local = _local_addresses()
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if address.is_loopback or address.is_unspecified or str(address) in local:
                raise OwnAddress(f"http: refused: {request.url.host}:{port} is this grid's own API "
                                 "(flows never call the grid's internal endpoints)")


def _local_addresses() -> set[str]:
    try:
        return set(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        return set()


def perform(client: httpx.Client, args: dict[str, Any]) -> dict[str, Any]:
    try:
        response = client.request(
            args.get("method", "GET"), args["url"], headers=args.get("headers") or {},
            content=args.get("body"), json=args.get("json"), timeout=float(args.get("timeout") or 30),
        )
    except OwnAddress as exc:
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
    own = OwnApis(options.api, Path(options.home) if options.home else None)
    outside = httpx.Client(follow_redirects=True, event_hooks={"request": [own.check]})

    def run(request: dict[str, Any]) -> dict[str, Any]:
        crash_point("before")
        result = perform(outside, request["args"])
        crash_point("after")
        return result

    api = api_client(options.api, options.executor)
    check_in(api, options.executor)
    serve_requests(api, ("http",), options.executor, run, concurrency=16)


if __name__ == "__main__":
    main()
