"""Cron schedules on a real grid: fires on time and across restarts, each catch-up and overlap
policy, the clock connector SIGKILLed at the fire point, and the CLI."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from flowmetal_cli.bundle import build_bundle
from grid_local.api.wire import WireClient
from tests.integration.conftest import Grid, stop_grid

NOTE = """
print("fired {}".format(fctx().args.tag))
"""

WAITER = """
me = fctx()
print("{} waiting".format(me.args.tag))
me.actions.receive()
"""


def deploy(grid: Grid, name: str, source: str) -> None:
    built = build_bundle(grid.write(f"{name}.flow", source))
    if not grid.client.has_bundle(built.digest):
        grid.client.upload_bundle(built.data, built.digest)
    grid.client.deploy(name, built.digest)


def add(grid: Grid, name: str, deployment: str, cron: str, **options: Any) -> dict[str, Any]:
    spec = {"deployment": deployment, "cron": cron, "args": {"tag": name}, **options}
    return grid.client.put_schedule(name, spec)


def fires(grid: Grid, schedule: str) -> list[sqlite3.Row]:
    """The schedule's fire records, read from the Flow DB file itself."""
    with sqlite3.connect(f"file:{grid.paths.db}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM schedule_fires WHERE schedule = ? ORDER BY fire_time", (schedule,)).fetchall()


def flows_of(grid: Grid, deployment: str) -> list[dict[str, Any]]:
    return [f for f in grid.client.list_flows(roots_only=True) if f["flow"] == deployment]


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def started(grid: Grid, schedule: str) -> list[str]:
    return [r["flow_id"] for r in fires(grid, schedule) if r["outcome"] == "started"]


def test_a_schedule_fires_on_time_and_keeps_firing_across_a_restart(grid_factory: Any) -> None:
    grid = grid_factory()
    deploy(grid, "tick", NOTE)
    schedule = add(grid, "every-second", "tick", "* * * * * *", overlap="allow")
    assert schedule["next_fire"] > time.time() - 1
    wait_for(lambda: len(started(grid, "every-second")) >= 2, "two fires")
    for row in fires(grid, "every-second"):  # each fire time is a whole second, handled within the grace
        assert row["fire_time"] == int(row["fire_time"]) and row["at"] - row["fire_time"] < 60

    stop_grid(grid.paths)
    before = fires(grid, "every-second")
    with sqlite3.connect(grid.paths.db) as db:
        next_fire = db.execute("SELECT next_fire FROM schedules WHERE name = 'every-second'").fetchone()[0]
    assert next_fire > before[-1]["fire_time"]  # durable: the next fire time is in the Flow DB
    wait_for(lambda: time.time() > next_fire + 2, "two fire times to pass while the grid is down")

    grid = grid_factory()
    wait_for(lambda: len(started(grid, "every-second")) >= len([r for r in before if r["outcome"] == "started"]) + 2,
             "fires after the restart")
    after = fires(grid, "every-second")
    times = [r["fire_time"] for r in after]
    assert times == sorted(set(times))  # every fire time once, in order
    downtime = [r for r in after if before[-1]["fire_time"] < r["fire_time"] < time.time() and r["at"] > r["fire_time"] + 1]
    assert any(r["outcome"] == "missed" for r in downtime)  # catch-up one: missed fire times start nothing...
    ids = started(grid, "every-second")
    assert len(ids) == len(set(ids)) == len(flows_of(grid, "tick"))  # ...and each started fire is one flow
    for flow_id in ids[:3]:
        assert grid.wait(flow_id)["status"] == "completed"


def test_catch_up_policies_after_days_of_downtime(grid_factory: Any) -> None:
    grid = grid_factory()
    deploy(grid, "daily", NOTE)
    now = datetime.now(timezone.utc)
    hour = (now.hour + 12) % 24  # the latest fire time is 11 to 13 hours old: never on time
    for policy in ("none", "one", "all"):
        add(grid, f"catch-{policy}", "daily", f"0 {hour} * * *", catch_up=policy, overlap="allow")
    stop_grid(grid.paths)
    latest = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if latest > now:
        latest -= timedelta(days=1)
    missed_since = (latest - timedelta(days=3)).timestamp()
    with sqlite3.connect(grid.paths.db) as db:  # as if the grid had been down for three and a half days
        db.execute("UPDATE schedules SET next_fire = ?", (missed_since,))

    grid = grid_factory()
    for policy in ("none", "one", "all"):
        wait_for(lambda: len(fires(grid, f"catch-{policy}")) == 4, f"catch-{policy} handled")
    outcomes = {p: [r["outcome"] for r in fires(grid, f"catch-{p}")] for p in ("none", "one", "all")}
    assert outcomes == {"none": ["missed"] * 4, "one": ["missed"] * 3 + ["started"], "all": ["started"] * 4}
    assert len(flows_of(grid, "daily")) == 5
    for schedule in grid.client.schedules():
        assert schedule["next_fire"] == (latest + timedelta(days=1)).timestamp()


def test_overlap_policies(grid: Grid) -> None:
    deploy(grid, "waits", WAITER)
    for policy in ("skip", "allow", "cancel-previous"):
        add(grid, f"overlap-{policy}", "waits", "* * * * * *", overlap=policy, catch_up="all")  # late fires run too
    for policy in ("skip", "allow", "cancel-previous"):
        wait_for(lambda: len(fires(grid, f"overlap-{policy}")) >= 3, f"three fires of overlap-{policy}")
        grid.client.schedule_action(f"overlap-{policy}", "pause")
    by_policy: dict[str, list[dict[str, Any]]] = {}
    for flow in flows_of(grid, "waits"):
        by_policy.setdefault(flow["args"]["tag"], []).append(flow)

    skip = fires(grid, "overlap-skip")
    assert skip[0]["outcome"] == "started" and {r["outcome"] for r in skip[1:]} == {"skipped"}
    assert len(by_policy["overlap-skip"]) == 1

    allow = fires(grid, "overlap-allow")
    assert {r["outcome"] for r in allow} == {"started"}
    assert len(by_policy["overlap-allow"]) == len(allow)
    assert all(f["status"] not in ("completed", "failed", "cancelled") for f in by_policy["overlap-allow"])

    cancel = started(grid, "overlap-cancel-previous")
    statuses = {f["id"]: f["status"] for f in by_policy["overlap-cancel-previous"]}
    assert len(cancel) >= 3 and [statuses[i] for i in cancel[:-1]] == ["cancelled"] * (len(cancel) - 1)
    assert statuses[cancel[-1]] != "cancelled"
    assert "a newer fire" in grid.client.get_flow(cancel[0])["error"]["message"]

    paused = {s["name"]: s for s in grid.client.schedules()}
    assert all(paused[f"overlap-{p}"]["paused"] for p in ("skip", "allow", "cancel-previous"))
    for flow in flows_of(grid, "waits"):
        if flow["status"] not in ("completed", "failed", "cancelled"):
            grid.client.cancel(flow["id"])


@pytest.mark.parametrize("moment", ["before", "after"])
def test_each_fire_starts_one_flow_when_the_clock_connector_is_killed_at_the_fire(
        grid_factory: Any, tmp_path: Path, moment: str) -> None:
    marker = tmp_path / f"crashed-{moment}"
    grid = grid_factory(extra_env={"FLOWMETAL_TEST_CRASH_AT_FIRE": f"{moment}:{marker}"})
    deploy(grid, "crashy", NOTE)
    add(grid, "crash", "crashy", "* * * * * *", overlap="allow", catch_up="all")  # every fire time starts a flow
    wait_for(marker.exists, "the clock connector to crash at its first fire")
    crashed_pid = int(marker.read_text())
    wait_for(lambda: any(p["pid"] != crashed_pid for p in grid.processes("connector:clock")), "a new clock connector")
    wait_for(lambda: len(started(grid, "crash")) >= 3, "fires after the crash")
    rows = fires(grid, "crash")
    ids = started(grid, "crash")
    assert len(ids) == len(set(ids)) == len(flows_of(grid, "crashy"))
    assert [r["fire_time"] for r in rows] == sorted({r["fire_time"] for r in rows})
    assert {r["outcome"] for r in rows} == {"started"}  # including the fire time the crash interrupted
    flows = {f["id"]: f for f in flows_of(grid, "crashy")}
    assert [flows[r["flow_id"]]["created"] >= r["fire_time"] for r in rows] == [True] * len(rows)

    # The fire endpoint refuses a fire time the schedule has moved past (what a stale incarnation would send).
    api = WireClient(grid.state["worker_url"])
    assert api.post("/v1/connectors/clock/schedules/fire", {"name": "crash", "next_fire": rows[0]["fire_time"]}) == {"fired": None}
    assert len(flows_of(grid, "crashy")) >= len(ids)
    grid.client.schedule_action("crash", "pause")


def test_schedule_cli(grid: Grid) -> None:
    deploy(grid, "cli", NOTE)
    added = grid.cli("schedule", "add", "hourly", "--deployment", "cli", "--cron", "0 * * * *", "--tz", "Europe/Berlin",
                     "--args-json", '{"tag": "manual"}', "--overlap", "allow", "--catch-up", "none")
    assert added.returncode == 0, added.stderr
    assert "next fire" in added.stdout and ":00:00 CE" in added.stdout  # CET or CEST, Berlin time
    listed = grid.cli("schedule", "list")
    assert listed.returncode == 0 and "hourly" in listed.stdout and "0 * * * *" in listed.stdout
    triggered = grid.cli("schedule", "trigger", "hourly")
    assert triggered.returncode == 0, triggered.stderr
    flow_id = triggered.stdout.strip()
    assert grid.wait(flow_id)["status"] == "completed" and grid.logs(flow_id) == ["fired manual"]
    assert grid.cli("schedule", "pause", "hourly").returncode == 0
    [schedule] = json.loads(grid.cli("schedule", "list", "--json").stdout)
    assert schedule["paused"] is True and schedule["started"] == 1
    resumed = grid.cli("schedule", "resume", "hourly")
    assert resumed.returncode == 0 and "next fire" in resumed.stdout

    for bad, problem in ((["--cron", "61 * * * *"], "invalid cron expression"), (["--cron", "* * * * *", "--tz", "Mars/Olympus"], "unknown time zone"),
                         (["--cron", "* * * * *", "--overlap", "maybe"], "--overlap takes")):
        refused = grid.cli("schedule", "add", "bad", "--deployment", "cli", *bad)
        assert refused.returncode == 2 and problem in refused.stderr, refused.stderr
    missing = grid.cli("schedule", "add", "bad", "--deployment", "nope", "--cron", "* * * * *")
    assert missing.returncode == 2 and "no deployment named 'nope'" in missing.stderr  # a name given wrong
    assert grid.cli("schedule", "rm", "hourly").returncode == 0
    gone = grid.cli("schedule", "trigger", "hourly")
    assert gone.returncode == 2 and "no schedule named 'hourly'" in gone.stderr
