"""Triggers declared in flowmetal.toml (``[hooks.NAME]``, ``[schedules.NAME]``), applied by ``push``.

They are read and checked (secrets included) before anything is uploaded, so a mistake in the
file changes nothing on the grid; after the deployment is registered each one is put as
``flowmetal hook add`` / ``flowmetal schedule add`` would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowmetal_cli.client import GridClient
from grid_local.errors import ArgumentError
from grid_local.runtime.sources import PROJECT_FILE

HOOK_KEYS = {"deployment", "signature", "secret_env", "secret_file", "to", "inbox", "match"}
SCHEDULE_KEYS = {"deployment", "cron", "tz", "args", "overlap", "catch_up"}


@dataclass(frozen=True)
class PlannedTrigger:
    kind: str  # "hook" or "schedule"
    name: str
    spec: dict[str, Any]


def _table(settings: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    tables = settings.get(section) or {}
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise ArgumentError(f"{PROJECT_FILE}: [{section}.NAME] must be tables")
    return tables


def project_folder(file: Path) -> Path:
    """Where relative paths in flowmetal.toml start: the project root of a script; for an archive,
    the current directory."""
    from grid_local.runtime.sources import find_project_root

    return find_project_root(file.resolve()) if file.suffix in (".flow", ".star") else Path.cwd()


def plan_triggers(settings: dict[str, Any], deployment: str, root: Path) -> list[PlannedTrigger]:
    """Every trigger the project declares, as the specs the grid takes (secrets read now)."""
    from flowmetal_cli.commands.hook import hook_spec, read_secret
    from flowmetal_cli.commands.schedule import schedule_spec
    from grid_local.triggers.webhooks import check_hook_name

    planned = []
    for name, table in _table(settings, "hooks").items():
        where = f"{PROJECT_FILE}: [hooks.{name}]"
        unknown = sorted(set(table) - HOOK_KEYS)
        if unknown:
            raise ArgumentError(f"{where}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(HOOK_KEYS))})")
        problem = check_hook_name(name)
        if problem:
            raise ArgumentError(f"{where}: {problem}")
        secret_file = table.get("secret_file")
        try:
            secret, source = read_secret(table.get("secret_env"), root / secret_file if secret_file else None)
            spec = hook_spec(str(table.get("deployment") or deployment), secret, source, table.get("signature"),
                             str(table.get("to", "start")), str(table.get("inbox", "_stdin")), table.get("match"))
        except ArgumentError as exc:
            raise ArgumentError(f"{where}: {exc}".replace("--secret-env", "secret_env").replace(
                "--secret-file", "secret_file").replace("--signature", "signature")) from None
        planned.append(PlannedTrigger("hook", name, spec))
    for name, table in _table(settings, "schedules").items():
        where = f"{PROJECT_FILE}: [schedules.{name}]"
        unknown = sorted(set(table) - SCHEDULE_KEYS)
        if unknown:
            raise ArgumentError(f"{where}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(SCHEDULE_KEYS))})")
        problem = check_hook_name(name)
        if problem:
            raise ArgumentError(f"{where}: {problem}")
        if not isinstance(table.get("cron"), str):
            raise ArgumentError(f"{where}: cron = \"...\" is required")
        if not isinstance(table.get("args", {}), dict):
            raise ArgumentError(f"{where}: args must be a table")
        try:
            spec = schedule_spec(str(table.get("deployment") or deployment), table["cron"], str(table.get("tz", "UTC")),
                                 table.get("args", {}), str(table.get("overlap", "skip")),
                                 str(table.get("catch_up", "one")))
        except ArgumentError as exc:
            raise ArgumentError(f"{where}: {str(exc).replace('--catch-up', 'catch_up').replace('--overlap', 'overlap')}") from None
        planned.append(PlannedTrigger("schedule", name, spec))
    return planned


def apply_triggers(client: GridClient, planned: list[PlannedTrigger]) -> list[dict[str, Any]]:
    applied = []
    for trigger in planned:
        if trigger.kind == "hook":
            applied.append({"kind": "hook", **client.put_hook(trigger.name, trigger.spec)})
        else:
            applied.append({"kind": "schedule", **client.put_schedule(trigger.name, trigger.spec)})
    return applied
