"""`flowmetal schedule add | list | pause | resume | rm | trigger`: cron schedules that start a deployment.

The next fire time lives in the grid's Flow DB, so a schedule survives the grid going down; the
fire times it missed meanwhile are handled by its catch-up policy.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from flowmetal_cli import console
from flowmetal_cli.commands.run import ContextOption, parse_args
from flowmetal_cli.connect import connect
from grid_local.errors import ArgumentError
from grid_local.triggers import cron
from grid_local.triggers.webhooks import check_hook_name

schedule_app = typer.Typer(help="Cron schedules that start a deployment's flows.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
NameArgument = Annotated[str, typer.Argument(help="The schedule.", show_default=False)]


def schedule_spec(deployment: str, expression: str, tz: str, args: dict[str, Any], overlap: str,
                  catch_up: str) -> dict[str, Any]:
    """What ``PUT /v1/schedules/NAME`` takes, checked here first (the grid checks it again)."""
    problem = cron.check_schedule(expression, tz)
    if problem:
        raise ArgumentError(problem)
    if overlap not in cron.OVERLAPS:
        raise ArgumentError(f"--overlap takes {', '.join(cron.OVERLAPS)}, not '{overlap}'")
    if catch_up not in cron.CATCH_UPS:
        raise ArgumentError(f"--catch-up takes {', '.join(cron.CATCH_UPS)}, not '{catch_up}'")
    return {"deployment": deployment, "cron": expression, "tz": tz, "args": args, "overlap": overlap,
            "catch_up": catch_up}


def when(timestamp: float, tz: str) -> str:
    """A fire time in the schedule's zone, and how far off it is."""
    local = datetime.fromtimestamp(timestamp, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")
    seconds = timestamp - time.time()
    if abs(seconds) < 60:
        ahead = f"{seconds:.0f}s"
    elif abs(seconds) < 3600:
        ahead = f"{seconds / 60:.0f}m"
    elif abs(seconds) < 86400:
        ahead = f"{seconds / 3600:.1f}h"
    else:
        ahead = f"{seconds / 86400:.1f}d"
    return f"{local} (in {ahead})" if seconds >= 0 else f"{local} ({ahead.lstrip('-')} ago)"


@schedule_app.command("add")
def add(
    name: NameArgument,
    deployment: Annotated[str, typer.Option("--deployment", "-d", help="The deployment it starts.", show_default=False)],
    expression: Annotated[str, typer.Option("--cron", help="Cron expression: minute hour day month weekday (and an optional sixth field, seconds).", show_default=False)],
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone the expression is read in.")] = "UTC",
    args_json: Annotated[str | None, typer.Option("--args-json", help="Arguments of each flow, as a JSON object.")] = None,
    arg: Annotated[list[str], typer.Option("--arg", "-a", help="An argument KEY=VALUE (repeatable).")] = [],
    overlap: Annotated[str, typer.Option("--overlap", help="When the previous flow still runs: skip this fire, allow both, or cancel-previous.")] = "skip",
    catch_up: Annotated[str, typer.Option("--catch-up", help="Fire times missed while the grid was down: none, one (the latest), or all.")] = "one",
    context: ContextOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add (or replace) a cron schedule that starts a flow of a deployment at each fire time.

    Examples:

      flowmetal schedule add nightly --deployment etl --cron "0 2 * * *" --tz Europe/Berlin

      flowmetal schedule add poll --deployment sync --cron "*/5 * * * *" --overlap skip --catch-up none

      flowmetal schedule add report --deployment batch --cron "0 9 * * 1" --args-json '{"count": 20}'
    """
    args = parse_args(arg, args_json)
    with console.edge():
        problem = check_hook_name(name)
        if problem:
            raise ArgumentError(problem)
        spec = schedule_spec(deployment, expression, tz, args, overlap, catch_up)
        with connect(context, autostart=True) as client:
            schedule = client.put_schedule(name, spec)
    if json_output:
        console.print_json(schedule)
        return
    typer.echo(f"schedule {name} -> deployment {schedule['deployment']} ({schedule['cron']} {schedule['tz']}): "
               f"next fire {when(schedule['next_fire'], schedule['tz'])}")


@schedule_app.command("list")
def list_schedules(context: ContextOption = None, json_output: JsonOption = False) -> None:
    """List the schedules you can see, with their next fire times.

    Examples:

      flowmetal schedule list

      flowmetal schedule list --json
    """
    with console.edge():
        with connect(context) as client:
            found = client.schedules()
    if json_output:
        console.print_json(found)
        return
    if not found:
        typer.echo("no schedules (add one with: flowmetal schedule add NAME --deployment D --cron EXPR)")
        return
    width = max(4, *(len(s["name"]) for s in found)) + 2
    dwidth = max(10, *(len(s["deployment"]) for s in found)) + 2
    cwidth = max(4, *(len(s["cron"]) for s in found)) + 2
    typer.echo(f"{'NAME':<{width}}{'DEPLOYMENT':<{dwidth}}{'CRON':<{cwidth}}{'OVERLAP':<17}{'CATCH-UP':<10}{'STARTED':>8}  NEXT FIRE")
    for s in found:
        following = "paused" if s["paused"] else when(s["next_fire"], s["tz"])
        typer.echo(f"{s['name']:<{width}}{s['deployment']:<{dwidth}}{s['cron']:<{cwidth}}{s['overlap']:<17}"
                   f"{s['catch_up']:<10}{s['started']:>8}  {following}")


def _act(name: str, action: str, context: str | None) -> dict[str, Any]:
    with console.edge():
        with connect(context) as client:
            return client.schedule_action(name, action)


@schedule_app.command("pause")
def pause(name: NameArgument, context: ContextOption = None) -> None:
    """Pause a schedule: it fires nothing until resumed.

    Examples:

      flowmetal schedule pause nightly
    """
    _act(name, "pause", context)
    typer.echo(f"paused schedule {name}")


@schedule_app.command("resume")
def resume(name: NameArgument, context: ContextOption = None) -> None:
    """Resume a schedule from now: the fire times that passed while it was paused are not caught up.

    Examples:

      flowmetal schedule resume nightly
    """
    schedule = _act(name, "resume", context)
    typer.echo(f"resumed schedule {name}: next fire {when(schedule['next_fire'], schedule['tz'])}")


@schedule_app.command("rm")
def rm(name: NameArgument, context: ContextOption = None) -> None:
    """Remove a schedule (flows it started keep running).

    Examples:

      flowmetal schedule rm nightly
    """
    with console.edge():
        with connect(context) as client:
            client.delete_schedule(name)
    typer.echo(f"removed schedule {name}")


@schedule_app.command("trigger")
def trigger(name: NameArgument, context: ContextOption = None, json_output: JsonOption = False) -> None:
    """Fire a schedule now, outside its cron times (its overlap policy applies); prints the flow id.

    Examples:

      flowmetal schedule trigger nightly

      flowmetal logs -f $(flowmetal schedule trigger nightly)
    """
    fired = _act(name, "trigger", context)
    if json_output:
        console.print_json(fired)
        return
    if fired["started"]:
        typer.echo(fired["started"][0])
        return
    if fired.get("refused"):
        console.fail(f"schedule {name} started nothing: {'; '.join(fired['refused'])}", console.EXIT_REFUSED)
    console.fail(f"schedule {name} started nothing: its previous flow still runs (overlap skip)")


def register(app: typer.Typer) -> None:
    app.add_typer(schedule_app, name="schedule")
