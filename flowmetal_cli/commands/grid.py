"""`flowmetal grid up|down|status`: the local grid's lifecycle."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from flowmetal_cli import console
from flowmetal_cli.client import GridClient, GridUnreachable
from grid_local.api.worker_auth import TOKEN_FILE
from grid_local.home import GridPaths, pid_alive
from grid_local.isolation import Isolation
from grid_local.layout import COMPONENTS, Layout, parse_listen, parse_only, read_token_file
from grid_local.supervisor import main as supervisor_main
from grid_local.supervisor import running_state, start_background, stop_background, workers_elsewhere
from grid_local.worker.settings import WorkerSettings

_DEFAULTS = WorkerSettings()

grid_app = typer.Typer(help="Start, stop and inspect the local grid.", no_args_is_help=True)


@grid_app.command("up")
def up(
    workers: Annotated[int, typer.Option("--workers", "-n", min=1, max=64, help="Worker processes.")] = os.cpu_count() or 2,
    foreground: Annotated[bool, typer.Option("--foreground", help="Run the supervisor in this terminal.")] = False,
    listen: Annotated[str | None, typer.Option("--listen", help="Serve the Client API on HOST:PORT (a shared grid).")] = None,
    tokens: Annotated[Path | None, typer.Option("--tokens", help="TOML file of bearer tokens: [tokens.\"<t>\"] user, quota.", exists=True, dir_okay=False)] = None,
    slots: Annotated[int, typer.Option("--slots", min=1, max=10000, help="Flows each worker evaluates at once (flows waiting on a result do not take one).")] = _DEFAULTS.slots,
    max_waiting: Annotated[int, typer.Option("--max-waiting", min=1, max=100000, help="Waiting flows each worker keeps in memory; more are suspended and replayed later.")] = _DEFAULTS.max_waiting,
    worker_memory: Annotated[int, typer.Option("--worker-memory", min=64, help="MiB of memory for flows in each worker process; a flow that needs more fails (out of memory).")] = _DEFAULTS.memory_mib,
    max_eval_budget: Annotated[float, typer.Option("--max-eval-budget", min=0.001, help="Most seconds of evaluation between two actions a bundle's [limits] eval_budget may ask for.")] = _DEFAULTS.max_eval_budget,
    max_callstack: Annotated[int, typer.Option("--max-callstack", min=1, max=1000000, help="Deepest call stack a bundle's [limits] max_callstack may ask for.")] = _DEFAULTS.max_callstack,
    max_suspend_after: Annotated[float, typer.Option("--max-suspend-after", min=0.001, help="Most seconds a bundle's [limits] suspend_after may keep a waiting flow in memory.")] = _DEFAULTS.max_suspend_after,
    clock: Annotated[str, typer.Option("--clock", help="real, or virtual: time stands still while anything can progress, then jumps to the next deadline (for testing long-running flows).")] = "real",
    no_workers: Annotated[bool, typer.Option("--no-workers", help="Start no workers here: they run elsewhere (flowmetal worker --url ...).")] = False,
    only: Annotated[str | None, typer.Option("--only", help="Start only these, comma-separated: client-api, worker-api, connectors, workers (api: both APIs).")] = None,
    worker_apis: Annotated[int, typer.Option("--worker-apis", min=1, max=16, help="Worker API replicas over the one Flow DB (each on its own port; grid.json lists them all).")] = 1,
    worker_listen: Annotated[str | None, typer.Option("--worker-listen", help="Serve the Worker API on HOST:PORT, for workers and connectors on other machines (replica i on PORT+i).")] = None,
    db: Annotated[str | None, typer.Option("--db", help="Keep the Flow DB on PostgreSQL: postgresql://USER@HOST:PORT/DB (the database must exist; the password from PGPASSWORD or ~/.pgpass). Default: flow.db in $FLOWMETAL_HOME.")] = None,
    worker_token_file: Annotated[Path | None, typer.Option("--worker-token-file", help="Keep this Worker API credential across grid starts (workers elsewhere hold a copy) instead of a new one each start.", exists=True, dir_okay=False)] = None,
    sandbox: Annotated[str, typer.Option("--sandbox", help="auto: workspace commands run under bubblewrap on a shared grid (--listen beyond loopback, or --tokens); exec: on this grid too.")] = "auto",
    http_allow: Annotated[str, typer.Option("--http-allow", metavar="CIDR,...", help="Loopback, link-local or private networks a shared grid's http action may reach (refused otherwise; the grid's own APIs always are).")] = "",
) -> None:
    """Start the local grid (APIs, workers, connectors) under $FLOWMETAL_HOME.

    Examples:

      flowmetal grid up

      flowmetal grid up --workers 4 --foreground

      flowmetal grid up --listen 127.0.0.1:8470 --tokens tokens.toml

      flowmetal grid up --slots 16 --worker-memory 1024 --max-eval-budget 30

      flowmetal grid up --clock virtual

      flowmetal grid up --no-workers --worker-apis 2 --worker-listen 0.0.0.0:8471 --worker-token-file wt.token

      flowmetal grid up --only api --listen 0.0.0.0:8470 --tokens tokens.toml

      flowmetal grid up --listen 0.0.0.0:8470 --tokens tokens.toml --http-allow 10.1.0.0/16

      flowmetal grid up --db postgresql://flowmetal@db.example.com:5432/flowmetal
    """
    paths = GridPaths.current()
    if db is not None:
        if not db.startswith(("postgresql://", "postgres://")):
            console.fail(f"--db takes a postgresql://USER@HOST:PORT/DB URL, not '{db}'", console.EXIT_USAGE)
        paths = GridPaths(paths.home, db)
    if clock not in ("real", "virtual"):
        console.fail(f"--clock takes real or virtual, not '{clock}'", console.EXIT_USAGE)
    if listen and (":" not in listen or not listen.rpartition(":")[2].isdigit()):
        console.fail(f"--listen takes HOST:PORT, not '{listen}'", console.EXIT_USAGE)
    if listen and not tokens and not listen.startswith("127."):
        console.fail("a grid listening beyond loopback needs --tokens", console.EXIT_USAGE)
    try:
        components = parse_only(only) if only else frozenset(COMPONENTS)
        if no_workers:
            components -= {"workers"}
        worker_host, worker_port = parse_listen(worker_listen, "--worker-listen") if worker_listen else ("127.0.0.1", 0)
        layout = Layout(components=components, worker_apis=worker_apis, worker_host=worker_host,
                        worker_port=worker_port, worker_token_file=worker_token_file)
        if worker_token_file:
            read_token_file(worker_token_file)
        Isolation.for_grid(listen.rpartition(":")[0] if listen else "127.0.0.1", bool(tokens), sandbox, http_allow)
    except ValueError as exc:  # (a LayoutError is one)
        console.fail(str(exc), console.EXIT_USAGE)
    settings = WorkerSettings(slots=slots, max_waiting=max_waiting, memory_mib=worker_memory,
                              max_eval_budget=max_eval_budget, max_callstack=max_callstack,
                              max_suspend_after=max_suspend_after)
    state = running_state(paths)
    if state is not None:
        typer.echo(f"a grid is already running at {state['url']} (home {paths.home})")
        return
    if foreground:
        argv = ["--home", str(paths.home), "--workers", str(workers), *settings.argv(), *layout.argv()]
        if listen:
            host, _, port = listen.rpartition(":")
            argv += ["--host", host, "--port", port]
        if tokens:
            argv += ["--tokens", str(tokens.resolve())]
        if db:
            argv += ["--db", db]
        supervisor_main([*argv, "--clock", clock, "--sandbox", sandbox, "--http-allow", http_allow])
        return
    try:
        state = start_background(paths, workers=workers, listen=listen, tokens=tokens, worker_settings=settings,
                                 clock=clock, layout=layout, sandbox=sandbox, http_allow=http_allow)
    except RuntimeError as exc:
        console.fail(str(exc), console.EXIT_UNREACHABLE)
    typer.echo(describe_up(state, paths, layout, workers if layout.has("workers") else 0, clock))


def describe_up(state: dict[str, Any], paths: GridPaths, layout: Layout, workers: int, clock: str) -> str:
    """`grid up`'s line; and where workers on other machines connect, for a grid that expects them."""
    virtual = ", virtual clock" if clock == "virtual" else ""
    where = f"grid up at {state['url']}" if state.get("url") else "grid up (no Client API here)"
    line = f"{where} (home {paths.home}, {workers} workers{virtual})"
    expects_others = not layout.has("workers") or layout.worker_port or layout.worker_apis > 1
    if state.get("worker_urls") and expects_others:
        urls = ",".join(state["worker_urls"])
        if layout.worker_host in ("0.0.0.0", "::", ""):  # (reached from elsewhere at this machine's address)
            urls = ",".join(url.replace(layout.connect_host, "HOST", 1) for url in state["worker_urls"])
            urls += f" (on every address of this machine, {layout.worker_host})"
        line += f"\nworker API {urls}, credential in {paths.home / TOKEN_FILE}"
    return line


@grid_app.command("down")
def down() -> None:
    """Stop the local grid: every process, cleanly; no pid or lock files are left behind.

    Flows are not lost: the next `grid up` (or `run`) resumes them from the Flow DB.

    Examples:

      flowmetal grid down
    """
    paths = GridPaths.current()
    if stop_background(paths):
        typer.echo("grid down")
    else:
        typer.echo(f"no grid was running for {paths.home}")


@grid_app.command("status")
def status(json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Each process of the local grid, with its pid and whether it is alive.

    Exit code 3 when no grid is running for $FLOWMETAL_HOME.

    Examples:

      flowmetal grid status

      flowmetal grid status --json
    """
    paths = GridPaths.current()
    state = running_state(paths)
    if state is None:
        if json_output:
            console.print_json({"running": False, "home": str(paths.home), "db": str(paths.db), "processes": []})
        else:
            typer.echo(f"no grid is running for {paths.home}")
        raise typer.Exit(console.EXIT_UNREACHABLE)
    processes = [dict(p, alive=pid_alive(p.get("pid"))) for p in state["processes"]]
    processes += [dict(p, alive=True) for p in workers_elsewhere(state)]
    healthy = True
    if state.get("url"):
        try:
            with GridClient(state["url"]) as client:
                client.health()
        except GridUnreachable:
            healthy = False
        except Exception:
            healthy = True  # a token-protected grid answers 401, which still means it is up
    report = {"running": True, "url": state["url"], "worker_url": state["worker_url"],
              "worker_urls": state.get("worker_urls", [state["worker_url"]]), "db": state["db"],
              "home": state["home"], "healthy": healthy, "clock": state.get("clock", "real"), "processes": processes}
    if json_output:
        console.print_json(report)
        return
    clock = ", virtual clock" if report["clock"] == "virtual" else ""
    where = f"grid at {state['url']}" if state.get("url") else "grid without a Client API here"
    typer.echo(f"{where} ({'healthy' if healthy else 'NOT answering'}{clock}), db {state['db']}")
    for p in processes:
        mark = "up" if p["alive"] else "DOWN"
        if p.get("remote"):  # a worker this supervisor did not start: where it calls from
            typer.echo(f"  {p['role']:<16} {p['name']:<12} at {p.get('address')!s:<9} up    (elsewhere)")
            continue
        typer.echo(f"  {p['role']:<16} {p['name']:<12} pid {p['pid']!s:<8} {mark:<5} restarts {p.get('restarts', 0)}")


def register(app: typer.Typer) -> None:
    app.add_typer(grid_app, name="grid")
