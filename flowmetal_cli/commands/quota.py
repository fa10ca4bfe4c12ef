"""`flowmetal quota tree | show | set`: the quota tree with usage against limits, and its limits."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from flowmetal_cli import console
from flowmetal_cli.commands.run import ContextOption
from flowmetal_cli.connect import connect
from grid_local import quota_tree as qt

quota_app = typer.Typer(help="The quota tree: usage against limits, and setting limits.", no_args_is_help=True)

LimitOption = Annotated[str | None, typer.Option(help="A number, or 'none' to remove the limit.")]


def _number(name: str, text: str | None, parse: Any = int) -> Any:
    """``none`` removes a limit; anything else must parse (exit 2 otherwise)."""
    if text is None:
        return ...
    if text.strip().lower() in ("none", "off", "-"):
        return None
    try:
        value = parse(text)
    except ValueError as exc:
        console.fail(f"--{name.replace('_', '-')}: {exc}", console.EXIT_USAGE)
    if value < 0:
        console.fail(f"--{name.replace('_', '-')}: must not be negative", console.EXIT_USAGE)
    return value


def _mebibytes(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1 MiB, not {text}")
    return value


def _cell(usage: int, limit: Any) -> str:
    return f"{usage}/{limit:g}" if limit is not None else str(usage)


def _bar(usage: int, limit: Any, width: int = 10) -> str:
    if not limit:
        return " " * width
    filled = min(width, round(width * usage / limit))
    return "#" * filled + "." * (width - filled)


def _print_tree(nodes: list[dict[str, Any]]) -> None:
    typer.echo(f"{'NODE':<32}{'RUNNING':>10} {'':<10}{'PENDING':>9}{'WAITING':>9}{'LIVE':>10}{'RATE/M':>10}"
               f"{'RESOURCES':>11}{'JOURNALS':>10}  SHARE")
    base = nodes[0]["path"].count("/") if nodes and nodes[0]["path"] != "/" else 0
    for node in nodes:
        depth = (node["path"].count("/") if node["path"] != "/" else 0) - base
        name = node["path"] if depth == 0 else "  " * depth + node["path"].rsplit("/", 1)[1]
        use, lim = node["usage"], node["limits"]
        typer.echo(f"{name[:31]:<32}{_cell(use['running'], lim.get('running')):>10} "
                   f"{_bar(use['running'], lim.get('running'))}{use['pending']:>9}{use['waiting']:>9}"
                   f"{_cell(use['live'], lim.get('live')):>10}{_cell(use['rate'], lim.get('rate')):>10}"
                   f"{_cell(use['resources'], lim.get('resources')):>11}{console.human_bytes(use['journal_bytes']):>10}  {node['share']}")


def tree(
    node: Annotated[str | None, typer.Argument(help="The subtree to show (default: your node).")] = None,
    context: ContextOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The quota tree with each node's usage against its limits, rolled up its subtree.

    Examples:

      flowmetal quota tree

      flowmetal quota tree /acme --json
    """
    with console.edge():
        with connect(context) as client:
            answer = client.quota_tree(node)
    if json_output:
        console.print_json(answer)
        return
    _print_tree(answer["nodes"])


def show(
    node: Annotated[str, typer.Argument(help="The quota node.")],
    context: ContextOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """One node: its own limits, the limits that hold for it (set here or above), and its usage.

    Examples:

      flowmetal quota show /acme/ci

      flowmetal quota show /acme/ci --json
    """
    with console.edge():
        with connect(context) as client:
            found = client.quota_show(node)
    if json_output:
        console.print_json(found)
        return
    typer.echo(f"node {found['path']}  share {found['share']}  "
               f"{'creates children on first use' if found['open'] else 'children only by quota set'}")
    use = found["usage"]
    typer.echo(f"usage: {use['running']} running, {use['pending']} pending, {use['waiting']} waiting, "
               f"{use['rate']} started in the last minute, {use['resources']} open resources, "
               f"journals {console.human_bytes(use['journal_bytes'])}")
    if not found["effective"]:
        typer.echo("limits: none")
    for name, limit in found["effective"].items():
        where = "" if limit["node"] == found["path"] else f"  (set on {limit['node']})"
        typer.echo(f"  {qt.LIMITS[name]:<40} {limit['value']:g}{where}")


def set_limits(
    node: Annotated[str, typer.Argument(help="The quota node (created if it does not exist).")],
    context: ContextOption = None,
    running: LimitOption = None,
    rate: Annotated[str | None, typer.Option(help="Flows started per minute: N/m, N/s, N/h or 'none'.")] = None,
    live: LimitOption = None,
    journal_entries: LimitOption = None,
    journal_bytes: LimitOption = None,
    bundle_bytes: LimitOption = None,
    eval_budget: Annotated[str | None, typer.Option(help="Cap on a bundle's eval_budget, seconds, or 'none'.")] = None,
    resources: Annotated[str | None, typer.Option(help="Open resources (workspaces, containers) of the subtree, or 'none'.")] = None,
    memory: Annotated[str | None, typer.Option(help="Cap on a bundle's memory_mib: MiB a flow's evaluation may grow its worker by, or 'none'.")] = None,
    share: Annotated[int | None, typer.Option(min=1, help="Weight among its siblings in the claim order.")] = None,
    open_: Annotated[bool | None, typer.Option("--open/--closed", help="Whether children are created on first use.")] = None,
) -> None:
    """Set limits on a node below yours (an admin's; a limit holds for the node's whole subtree).

    Examples:

      flowmetal quota set /acme/ci --running 10 --rate 30/m --live 200

      flowmetal quota set /acme/ci --running none

      flowmetal quota set /acme/ci --memory 256 --eval-budget 5
    """
    settings: dict[str, Any] = {}
    for name, text, parse in (("running", running, int), ("rate", rate, qt.parse_rate), ("live", live, int),
                              ("journal_entries", journal_entries, int), ("journal_bytes", journal_bytes, int),
                              ("bundle_bytes", bundle_bytes, int), ("eval_budget", eval_budget, float),
                              ("resources", resources, int), ("memory", memory, _mebibytes)):
        value = _number(name, text, parse)
        if value is not ...:
            settings[name] = value
    if share is not None:
        settings["share"] = share
    if open_ is not None:
        settings["open"] = open_
    with console.edge():
        with connect(context) as client:
            found = client.quota_set(node, settings)
    limits = ", ".join(f"{k} {v:g}" for k, v in found["limits"].items()) or "no limits"
    typer.echo(f"quota {found['path']}: {limits}; share {found['share']}")


quota_app.command("tree")(tree)
quota_app.command("show")(show)
quota_app.command("set")(set_limits)


def register(app: typer.Typer) -> None:
    app.add_typer(quota_app, name="quota")
