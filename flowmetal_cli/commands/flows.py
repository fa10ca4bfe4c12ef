"""`flowmetal ps | logs | inspect | cancel | send`: looking at and steering flows on a grid."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer

from flowmetal_cli import console
from flowmetal_cli.commands.run import ContextOption
from flowmetal_cli.connect import connect
from flowmetal_cli.streaming import follow

PS_FIELDS = ("id", "parent", "root", "flow", "status", "quota", "created", "finished")


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def ps(
    context: ContextOption = None,
    all_flows: Annotated[bool, typer.Option("--all", "-a", help="Include finished flows and children.")] = False,
    status: Annotated[str | None, typer.Option("--status", help="Only flows with this status.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List flows (running root flows by default).

    Examples:

      flowmetal ps

      flowmetal ps --all --json
    """
    with console.edge():
        with connect(context) as client:
            flows = client.list_flows(status=status)
    if not all_flows and status is None:
        flows = [f for f in flows if f["status"] not in ("completed", "failed", "cancelled") and f["parent"] is None]
    if json_output:
        console.print_json([{k: f.get(k) for k in PS_FIELDS} for f in flows])
        return
    now = time.time()
    typer.echo(f"{'ID':<14}{'FLOW':<24}{'STATUS':<11}{'AGE':>6}  {'PARENT':<14}QUOTA")
    for f in flows:
        typer.echo(f"{f['id']:<14}{f['flow'][:23]:<24}{f['status']:<11}{_age(now - f['created']):>6}  "
                   f"{(f['parent'] or '-'):<14}{f['quota']}")


def logs(
    flow_id: Annotated[str, typer.Argument(help="The flow (its whole tree is shown).")],
    context: ContextOption = None,
    follow_output: Annotated[bool, typer.Option("--follow", "-f", help="Keep following until the flow ends.")] = False,
) -> None:
    """Print a flow's log (its _stdout), children's lines prefixed with their name.

    Examples:

      flowmetal logs 3f2a9c1d0b7e

      flowmetal logs --follow 3f2a9c1d0b7e
    """
    with console.edge():
        client = connect(context)
        flow = client.get_flow(flow_id)
        follow(client, flow["root"] if flow["root"] == flow_id else flow_id,
               reconnect=(lambda: connect(context)) if follow_output else None,
               follow_to_end=follow_output and flow["status"] not in ("completed", "failed", "cancelled"))
        client.close()


def inspect(
    flow_id: Annotated[str, typer.Argument(help="The flow to inspect.")],
    context: ContextOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """A flow's record: status, result or error, and its journal.

    Each journal entry shows its sequence number, kind, arguments, result and the source line
    that asked for it.

    Examples:

      flowmetal inspect 3f2a9c1d0b7e

      flowmetal inspect --json 3f2a9c1d0b7e
    """
    with console.edge():
        with connect(context) as client:
            flow = client.get_flow(flow_id)
    if json_output:
        console.print_json(flow)
        return
    typer.echo(f"flow {flow['flow']} ({flow['id']})  status {flow['status']}  quota {flow['quota']}")
    if flow["parent"]:
        typer.echo(f"parent {flow['parent']}  root {flow['root']}")
    if flow.get("why") and flow["status"] not in ("completed", "failed", "cancelled"):
        typer.echo(f"why: {flow['why']}")
    if flow.get("error"):
        typer.echo(f"error: {flow['error'].get('message')}")
    elif flow["status"] == "completed":
        typer.echo(f"result: {json.dumps(flow.get('result'))}")
    typer.echo("journal:")
    for entry in flow["journal"]:
        typer.echo(f"  {entry['seq']:>4} {entry['kind']:<8} {_summary(entry['args']):<48} -> {_result(entry['result'])}"
                   f"  {entry.get('callsite') or ''}")


def _summary(args: Any) -> str:
    text = json.dumps(args, separators=(",", ":"))
    return text if len(text) <= 46 else text[:43] + "..."


def _result(result: dict[str, Any] | None) -> str:
    if result is None:
        return "(pending)"
    if result.get("ok"):
        return "ok " + _summary(result.get("value"))
    return "err " + str(result.get("error"))[:60]


def cancel(
    flow_id: Annotated[str | None, typer.Argument(help="The flow to cancel (its children too).")] = None,
    context: ContextOption = None,
    quota: Annotated[str | None, typer.Option("--quota", help="With --all: cancel every live flow in this subtree.")] = None,
    all_flows: Annotated[bool, typer.Option("--all", help="With --quota: every live flow in the subtree.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation on a terminal.")] = False,
) -> None:
    """Cancel a flow and every unfinished child, or every live flow of a quota subtree.

    Examples:

      flowmetal cancel 3f2a9c1d0b7e

      flowmetal cancel --quota /acme/ci --all
    """
    if (flow_id is None) == (quota is None) or (quota is not None and not all_flows):
        console.fail("give a flow id, or --quota NODE --all", console.EXIT_USAGE)
    with console.edge():
        with connect(context) as client:
            if quota is not None:
                if console.is_tty(sys.stdin) and not yes:
                    live = next((n["usage"]["live"] for n in client.quota_tree(quota)["nodes"]), 0)
                    if not typer.confirm(f"cancel the {live} live flow(s) in {quota} (those you may)?"):
                        raise typer.Exit(1)
                cancelled = client.cancel_subtree(quota)["cancelled"]
            else:
                assert flow_id is not None
                cancelled = client.cancel(flow_id)["cancelled"]
    typer.echo(f"cancelled {len(cancelled)} flow(s): {' '.join(cancelled)}")


def send(
    flow_id: Annotated[str, typer.Argument(help="The receiving flow.")],
    value: Annotated[str, typer.Argument(help="The message, as JSON (with --string: any text, sent as a string).")],
    context: ContextOption = None,
    inbox: Annotated[str, typer.Option("--inbox", help="The inbox to write to.")] = "_stdin",
    as_string: Annotated[bool, typer.Option("--string", help="Send VALUE as a plain string instead of parsing it as JSON.")] = False,
) -> None:
    """Send a message to a flow's inbox. VALUE is JSON; malformed JSON is refused (exit 2) rather
    than guessed at, and plain text needs --string.

    Examples:

      flowmetal send 3f2a9c1d0b7e '{"event": "push", "ref": "main"}'

      flowmetal send --inbox approvals 3f2a9c1d0b7e true

      flowmetal send --string 3f2a9c1d0b7e 'deploy when ready'
    """
    if as_string:
        message: Any = value
    else:
        try:
            message = json.loads(value)
        except ValueError as exc:
            console.fail(f"the message is not valid JSON ({exc}); to send it as a plain string, add --string",
                         console.EXIT_USAGE)
    with console.edge():
        with connect(context) as client:
            client.send(flow_id, message, inbox)
    typer.echo(f"sent to {flow_id} ({inbox})")


def register(app: typer.Typer) -> None:
    app.command("ps")(ps)
    app.command("logs")(logs)
    app.command("inspect")(inspect)
    app.command("cancel")(cancel)
    app.command("send")(send)
