"""`flowmetal worker`: a worker process on any machine that reaches the grid's Worker API.

It needs nothing of the grid's machine but the Worker API's URLs and its credential: no Flow DB,
no shared files (bundles come over the API, verified against their digest). This command checks
its options, then becomes the worker process itself (exec), so that the pid a service manager or
a test holds is the worker's.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
from pathlib import Path
from typing import Annotated, NoReturn
from urllib.parse import urlsplit

import typer

from flowmetal_cli import console
from grid_local.api.wire import split_urls
from grid_local.api.worker_auth import TOKEN_ENV
from grid_local.layout import LayoutError, read_token_file
from grid_local.worker.settings import WorkerSettings

_DEFAULTS = WorkerSettings()

URL_HELP = "The grid's Worker API: one URL, a comma-separated list of its replicas (failed over in turn), or one URL behind a load balancer."
TOKEN_HELP = f"File holding the grid's Worker API credential (a copy of worker-api.token in the grid's home, or the file given to grid up --worker-token-file). Without it, {TOKEN_ENV} is used."


def worker_api_urls(url: str) -> list[str]:
    """The --url list, each an http(s)://HOST[:PORT] (a usage error otherwise)."""
    urls = split_urls(url)
    if not urls:
        console.fail("--url names no Worker API", console.EXIT_USAGE)
    for given in urls:
        parts = urlsplit(given)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            console.fail(f"--url takes http://HOST:PORT (a comma-separated list for replicas), not '{given}'",
                         console.EXIT_USAGE)
        try:
            parts.port
        except ValueError:
            console.fail(f"--url has a bad port: '{given}'", console.EXIT_USAGE)
    return urls


def worker_api_token(token_file: Path | None) -> str:
    if token_file is None:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            console.fail(f"the Worker API needs the grid's credential: give --token-file (or set {TOKEN_ENV})",
                         console.EXIT_USAGE)
        return token
    try:
        return read_token_file(token_file)
    except LayoutError as exc:
        console.fail(str(exc), console.EXIT_USAGE)


def become(module: str, argv: list[str], token: str, address_space: int | None = None,
           env: dict[str, str] | None = None) -> NoReturn:
    """Replace this process with ``python -m module argv`` holding the credential in its environment."""
    environment = {**os.environ, **(env or {}), TOKEN_ENV: token, "PYTHONUNBUFFERED": "1"}
    if address_space is not None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], environment)


def worker(
    url: Annotated[str, typer.Option("--url", help=URL_HELP)],
    token_file: Annotated[Path | None, typer.Option("--token-file", help=TOKEN_HELP, dir_okay=False)] = None,
    name: Annotated[str | None, typer.Option("--name", help="How the grid lists this worker (its pid is added); the default names this host.")] = None,
    slots: Annotated[int, typer.Option("--slots", min=1, max=10000, help="Flows this worker evaluates at once (flows waiting on a result do not take one).")] = _DEFAULTS.slots,
    max_waiting: Annotated[int, typer.Option("--max-waiting", min=1, max=100000, help="Waiting flows it keeps in memory; more are suspended and replayed later.")] = _DEFAULTS.max_waiting,
    worker_memory: Annotated[int, typer.Option("--worker-memory", min=64, help="MiB of memory for flows in this process; a flow that needs more fails (out of memory).")] = _DEFAULTS.memory_mib,
    max_eval_budget: Annotated[float, typer.Option("--max-eval-budget", min=0.001, help="Most seconds of evaluation between two actions a bundle's [limits] may ask for.")] = _DEFAULTS.max_eval_budget,
    max_callstack: Annotated[int, typer.Option("--max-callstack", min=1, max=1000000, help="Deepest call stack a bundle's [limits] may ask for.")] = _DEFAULTS.max_callstack,
    max_suspend_after: Annotated[float, typer.Option("--max-suspend-after", min=0.001, help="Most seconds a bundle's [limits] may keep a waiting flow in memory.")] = _DEFAULTS.max_suspend_after,
) -> None:
    """Run a worker for a grid whose Worker API is reachable from here (until stopped).

    It claims flows, evaluates them and reports over the Worker API only. When a replica in --url
    stops answering it goes on through the next, keeping its flows. Stopped (SIGTERM), it hands its
    flows back at once; killed, they move to other workers when their leases expire (10 s).

    Exit codes: 2 usage (a bad URL, no token); 4 the Worker API refused the token. A Worker API
    that does not answer yet is retried, saying so.

    Examples:

      flowmetal worker --url http://grid.example.com:8471 --token-file worker-api.token

      flowmetal worker --url http://10.0.0.5:8471,http://10.0.0.6:8471 --token-file worker-api.token --slots 16
    """
    urls = worker_api_urls(url)
    token = worker_api_token(token_file)
    settings = WorkerSettings(slots=slots, max_waiting=max_waiting, memory_mib=worker_memory,
                              max_eval_budget=max_eval_budget, max_callstack=max_callstack,
                              max_suspend_after=max_suspend_after)
    console.info(f"worker: serving the Worker API at {', '.join(urls)}")
    become("grid_local.worker.main",
           ["--api", ",".join(urls), "--name", name or f"worker-{socket.gethostname()}", *settings.argv()],
           token, settings.address_space_bytes,
           # glibc's per-thread arenas would reserve address space by the GiB
           env={"MALLOC_ARENA_MAX": "2"})


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
