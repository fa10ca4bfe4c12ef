"""`flowmetal push | deployments | start`: named deployments of a bundle on a grid.

``push`` uploads a bundle (built from a script, or an archive written by ``flowmetal bundle``)
unless the grid already holds its digest, then points a deployment name at that digest.
``start NAME`` starts the deployed bundle's entry script as a root flow, as ``run`` does.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from flowmetal_cli import console
from flowmetal_cli.bundle import ENTRY_SUFFIXES, build_bundle
from flowmetal_cli.checker import refuse_check_errors
from flowmetal_cli.client import GridClient, Progress
from flowmetal_cli.commands.run import ContextOption, QuotaOption, parse_args, quota_node, report_outcome
from flowmetal_cli.connect import connect
from flowmetal_cli.project_triggers import apply_triggers, plan_triggers, project_folder
from flowmetal_cli.streaming import follow
from grid_local import bundle_format
from grid_local.errors import BundleError

PROGRESS_FROM_BYTES = 1024 * 1024
"""Bundles at least this large show an upload progress bar (on a TTY only)."""
_DEPLOYMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class Pushable:
    """What push sends: the archive's bytes, its digest and entry script, and a default name."""

    data: bytes
    digest: str
    entry: str
    default_name: str
    files: int


def check_deployment_name(name: str) -> str:
    if not _DEPLOYMENT_NAME.match(name):
        raise BundleError(
            f"invalid deployment name '{name}': use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 128 characters)"
        )
    return name


def load_pushable(file: Path) -> Pushable:
    """A script is checked (as ``run`` does) and bundled; an archive is read and validated."""
    if file.suffix in ENTRY_SUFFIXES:
        refuse_check_errors(file)
        built = build_bundle(file)
        for warning in built.warnings:
            console.info(f"warning: {warning}")
        return Pushable(built.data, built.digest, built.entry, file.stem, len(built.files))
    if not file.is_file():
        raise BundleError(f"{file}: no such file")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise BundleError(f"{file}: cannot read it: {exc.strerror or exc}") from None
    if not data.startswith(_ZIP_MAGIC):
        raise BundleError(f"{file}: neither a script (.flow, .star) nor a bundle archive (flowmetal bundle -o ...)")
    try:
        bundle = bundle_format.read_bundle(data)
    except BundleError as exc:
        raise BundleError(f"{file}: {exc}") from None
    return Pushable(data, bundle.digest, bundle.entry, Path(bundle.entry).stem, len(bundle.files))


@contextmanager
def upload_progress(total: int) -> Iterator[Progress | None]:
    """A transient progress bar on stderr for a large upload on a TTY; None (no bar) otherwise."""
    if total < PROGRESS_FROM_BYTES or not console.is_tty(sys.stderr):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress as Bar, TransferSpeedColumn

    with Bar("uploading", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
             console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("upload", total=total)

        def update(sent: int, size: int) -> None:
            bar.update(task, completed=sent, total=size)

        yield update


def push_file(client: GridClient, pushable: Pushable, name: str) -> dict[str, Any]:
    """Upload unless held, register the deployment; returns what was done."""
    uploaded = False
    if not client.has_bundle(pushable.digest):
        with upload_progress(len(pushable.data)) as progress:
            client.upload_bundle(pushable.data, pushable.digest, progress=progress)
        uploaded = True
    deployment = client.deploy(name, pushable.digest)
    return {"name": name, "digest": pushable.digest, "entry": pushable.entry, "bytes": len(pushable.data),
            "files": pushable.files, "uploaded": uploaded, "context": client.context, "deployment": deployment}


def push(
    file: Annotated[Path, typer.Argument(help="A .flow script (bundled first) or a .bundle archive.", show_default=False)],
    context: ContextOption = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Deployment name (default: the script's name without its suffix).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Upload a script or bundle to a grid and register it as a named deployment.

    The upload is skipped when the grid already holds the bundle's digest; pushing again under
    the same name points the deployment at the new bundle. Start it with `flowmetal start NAME`.
    Large uploads show progress on a terminal.

    Webhooks and schedules declared in the project's flowmetal.toml ([hooks.NAME],
    [schedules.NAME]) are added or replaced too (see docs/triggers.md).

    Exit code: 2 for bundle errors, 3 when the grid is unreachable, 4 when the token is refused.

    Examples:

      flowmetal push main.flow --name nightly

      flowmetal bundle main.flow -o dist/app.bundle && flowmetal push --context prod dist/app.bundle

      flowmetal push --json main.flow
    """
    with console.edge():
        pushable = load_pushable(file)
        chosen = check_deployment_name(name or pushable.default_name)
        planned = plan_triggers(bundle_format.read_bundle(pushable.data).settings, chosen, project_folder(file))
        with connect(context, autostart=True) as client:
            result = push_file(client, pushable, chosen)
            result["triggers"] = apply_triggers(client, planned)
    if json_output:
        console.print_json(result)
        return
    if result["uploaded"]:
        typer.echo(f"uploaded {result['digest']} ({result['files']} files, {result['bytes']} bytes)")
    else:
        typer.echo(f"the grid already holds {result['digest']}: upload skipped")
    typer.echo(f"deployed {chosen} -> {result['digest']} (context {result['context']}, "
               f"quota {result['deployment'].get('quota', '?')})")
    for trigger in result["triggers"]:
        typer.echo(f"{trigger['kind']} {trigger['name']} -> deployment {trigger['deployment']}")


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{max(seconds, 0):.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def deployments(
    context: ContextOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the deployments you can see (those under your quota node).

    Examples:

      flowmetal deployments

      flowmetal deployments --context prod --json
    """
    with console.edge():
        with connect(context) as client:
            found = client.deployments()
    if json_output:
        console.print_json(found)
        return
    if not found:
        typer.echo("no deployments (register one with: flowmetal push --name NAME FILE)")
        return
    now = time.time()
    width = max(4, *(len(d["name"]) for d in found)) + 2
    typer.echo(f"{'NAME':<{width}}{'DIGEST':<21}{'UPDATED':>8}  QUOTA")
    for d in found:
        typer.echo(f"{d['name']:<{width}}{d['digest'][:19]:<21}{_age(now - float(d.get('updated') or 0)):>8}  "
                   f"{d.get('quota', '')}")


def start_deployment(name: str, context: str | None, args: dict[str, Any], detach: bool,
                     quota: str | None = None) -> int:
    client = connect(context, autostart=True)
    try:
        flow = client.start_deployment(name, args, quota)
        if detach:
            typer.echo(flow["id"])
            return console.EXIT_OK
        final, client = follow(client, flow["id"], reconnect=lambda: connect(context, autostart=False))
    finally:
        client.close()
    assert final is not None
    return report_outcome(final)


def start(
    name: Annotated[str, typer.Argument(help="The deployment to start.", show_default=False)],
    context: ContextOption = None,
    arg: Annotated[list[str], typer.Option("--arg", "-a", help="A root flow argument KEY=VALUE (repeatable).")] = [],
    args_json: Annotated[str | None, typer.Option("--args-json", help="Root flow arguments as a JSON object.")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Print the flow id and return at once.")] = False,
    quota: QuotaOption = None,
) -> None:
    """Start a deployed flow and stream its output, as `flowmetal run` does.

    Exit code: 0 when the flow completes, 1 when it fails or there is no such deployment,
    3 when the grid is unreachable, 4 when refused (token, quota, or another quota's deployment).

    Examples:

      flowmetal start nightly

      flowmetal start --context prod --arg ref=v1.2 --detach release

      flowmetal start --quota /acme/ci nightly
    """
    args = parse_args(arg, args_json)
    quota = quota_node(quota)
    with console.edge():
        raise typer.Exit(start_deployment(name, context, args, detach, quota))


def register(app: typer.Typer) -> None:
    app.command("push")(push)
    app.command("deployments")(deployments)
    app.command("start")(start)
