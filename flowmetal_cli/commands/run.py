"""`flowmetal run`: bundle a script, start it on a grid, stream its output, exit with its outcome."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from flowmetal_cli import console
from flowmetal_cli.bundle import BuiltBundle, build_bundle
from flowmetal_cli.checker import refuse_check_errors
from flowmetal_cli.client import GridClient
from flowmetal_cli.connect import connect
from flowmetal_cli.streaming import follow
from grid_local import quota_tree as qt

ContextOption = Annotated[
    str | None, typer.Option("--context", "-c", help="Context to use (default: $FLOWMETAL_CONTEXT, else the current one).")
]


def parse_args(pairs: list[str], args_json: str | None) -> dict[str, Any]:
    """``--arg k=v`` (v read as JSON when it parses, else as a string) merged over ``--args-json``."""
    args: dict[str, Any] = {}
    if args_json:
        try:
            loaded = json.loads(args_json)
        except ValueError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--args-json") from None
        if not isinstance(loaded, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--args-json")
        args.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="--arg")
        try:
            args[key.strip()] = json.loads(raw)
        except ValueError:
            args[key.strip()] = raw
    return args


def upload(client: GridClient, built: BuiltBundle) -> None:
    """Upload a bundle unless the grid already holds its digest."""
    if not client.has_bundle(built.digest):
        client.upload_bundle(built.data, built.digest)


def report_outcome(flow: dict[str, Any]) -> int:
    status = flow["status"]
    if status == "completed":
        return console.EXIT_OK
    error = flow.get("error") or {}
    console.error(f"flow {flow['flow']} ({flow['id']}) {status}: {error.get('message', '')}")
    if error.get("traceback"):
        typer.echo(error["traceback"].rstrip(), err=True)
    return console.EXIT_FAILED


QuotaOption = Annotated[
    str | None, typer.Option("--quota", "-q", help="The quota node to start in (default: your own; an admin may name one below it).")
]


def quota_node(text: str | None) -> str | None:
    """A --quota node as the grid spells it (``acme/ci/`` -> ``/acme/ci``); a malformed one is a usage error."""
    if text is None:
        return None
    try:
        return qt.normalize(text)
    except qt.QuotaPathError as exc:
        console.fail(f"--quota: {exc}", console.EXIT_USAGE)


def run_once(file: Path, context: str | None, args: dict[str, Any], detach: bool, quota: str | None = None) -> int:
    refuse_check_errors(file)
    built = build_bundle(file)
    client = connect(context, autostart=True)
    upload(client, built)
    flow = client.start_flow(built.digest, args, name=file.name, quota=quota)
    if detach:
        typer.echo(flow["id"])
        return console.EXIT_OK
    final, client = follow(client, flow["id"], reconnect=lambda: connect(context, autostart=False))
    client.close()
    assert final is not None
    return report_outcome(final)


def run(
    file: Annotated[Path, typer.Argument(help="The .flow script to run.", show_default=False)],
    context: ContextOption = None,
    arg: Annotated[list[str], typer.Option("--arg", "-a", help="A root flow argument KEY=VALUE (repeatable).")] = [],
    args_json: Annotated[str | None, typer.Option("--args-json", help="Root flow arguments as a JSON object.")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Print the flow id and return at once.")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Re-run on every change to the script or what it loads.")] = False,
    virtual_clock: Annotated[bool, typer.Option("--virtual-clock", help="Run on an ephemeral local grid whose clock jumps over sleeps and timeouts whenever nothing else can happen (a week's sleep takes milliseconds).")] = False,
    quota: QuotaOption = None,
) -> None:
    """Bundle FILE, start it on a grid and stream its output.

    FILE is checked first, as `flowmetal check` would: any error (an undefined name, a flow
    called with undeclared arguments, ...) is printed with its hint and nothing is uploaded
    (exit code 2). Starts the local grid in the background when none is running. Exit code: 0 when the flow
    completes, 1 when it fails (error and Starlark traceback on stderr), 2 on usage or bundle
    errors, 3 when the grid is unreachable, 4 when refused. With --watch, every change to the
    script or a file it loads cancels the run and starts a new one; Ctrl-C cancels the running
    flow and exits 130.

    Examples:

      flowmetal run hello.flow

      flowmetal run --arg name=world --arg count=3 job.flow

      flowmetal run --context=prod --detach nightly.flow

      flowmetal run --virtual-clock weekly-reminder.flow

      flowmetal run --quota /acme/ci build.flow
    """
    args = parse_args(arg, args_json)
    quota = quota_node(quota)
    if virtual_clock:
        if watch or detach or quota is not None or context not in (None, "local"):
            console.fail("--virtual-clock runs on an ephemeral local grid: not with --watch, --detach, --quota or --context",
                         console.EXIT_USAGE)
        from flowmetal_cli.ephemeral import run_with_virtual_clock

        with console.edge():
            raise typer.Exit(run_with_virtual_clock(file, args))
    if watch:
        from flowmetal_cli.watch import watch_and_run

        with console.edge():
            raise typer.Exit(watch_and_run(file, context, args, quota=quota))
    with console.edge():
        raise typer.Exit(run_once(file, context, args, detach, quota))


def register(app: typer.Typer) -> None:
    app.command("run")(run)
