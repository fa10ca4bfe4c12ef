"""Run one of the grid's HTTP APIs under uvicorn (a process of its own, started by the supervisor)."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import Any

import uvicorn

from grid_local.api.worker_auth import TOKEN_ENV, TOKEN_FILE
from grid_local.home import GridPaths
from grid_local.isolation import Isolation


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="flowmetal-api")
    parser.add_argument("which", choices=["client", "worker"])
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=Path, default=None)
    parser.add_argument("--notify-port", type=int, default=None, help="UDP port this API is poked on")
    parser.add_argument("--peer-notify-port", type=int, action="append", default=[],
                        help="UDP port to poke after commits (once per peer API)")
    parser.add_argument("--db", default=None, help="postgresql://... (default: flow.db in the home)")
    Isolation.add_arguments(parser)  # the Worker API hands the grid's policy to every connector
    options = parser.parse_args(argv)
    paths = GridPaths(options.home, options.db)
    app: Any
    if options.which == "client":
        from grid_local.api.client_api import create_app

        app = create_app(paths, options.tokens, options.notify_port, options.peer_notify_port)
    else:
        from grid_local.api.worker_api import create_app as create_worker_app
        from grid_local.api.worker_auth import worker_token

        if not worker_token(paths.home) and not is_loopback(options.host):
            parser.exit(2, f"error: a Worker API on {options.host} (beyond loopback) needs the grid's credential "
                           f"({TOKEN_ENV} or {TOKEN_FILE} in {paths.home})\n")

        app = create_worker_app(paths, options.notify_port, options.peer_notify_port,
                                Isolation.from_options(options))
    uvicorn.run(app, host=options.host, port=options.port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools", backlog=2048, timeout_keep_alive=120,
                timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
