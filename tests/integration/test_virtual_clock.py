"""The virtual clock on a real grid: time stands still while anything can progress, then jumps to
the next deadline. A week's sleep, a day of hourly fires, timeouts in order, and no jump while a
request is in flight. (Wall time is measured in bench/bench_triggers.py, never asserted here.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowmetal_cli.bundle import build_bundle
from grid_local.home import GridPaths
from grid_local.supervisor import start_background
from tests.integration.conftest import CountingServer, Grid, grid_env, stop_grid
from tests.integration.test_schedules import fires, wait_for

DAY = 86400.0


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    tmp = tmp_path_factory.mktemp("virtual")
    env = grid_env(tmp)
    paths = GridPaths(Path(env["FLOWMETAL_HOME"]))
    project = tmp / "project"
    project.mkdir()
    (project / "flowmetal.toml").write_text('[project]\nname = "it"\n')
    found: Grid | None = None
    try:
        found = Grid(paths, start_background(paths, workers=2, clock="virtual"), env, project)
        yield found
    finally:
        if found is not None:
            found.client.close()
        stop_grid(paths)


def nows(flow: dict[str, Any]) -> list[float]:
    return [e["result"]["value"] for e in flow["journal"] if e["kind"] == "now"]


def test_a_week_of_sleep_passes_at_once_and_the_journal_records_virtual_times(grid: Grid) -> None:
    assert grid.state["clock"] == "virtual"
    script = grid.write("week.flow", """
        a = fctx().actions
        a.now()
        a.sleep(7 * 24 * 3600)
        a.now()
    """)
    flow = grid.wait(grid.start(script))
    assert flow["status"] == "completed", flow
    before, after = nows(flow)
    assert after - before == 7 * DAY  # exactly: the clock jumped to the sleep's deadline
    sleep = next(e for e in flow["journal"] if e["kind"] == "sleep")
    assert sleep["requested_at"] == before and sleep["answered_at"] == after


def test_timeouts_fire_in_order_of_their_deadlines(grid: Grid) -> None:
    script = grid.write("order.flow", """
        def _napper_impl(fctx):
            fctx.actions.sleep(fctx.args.seconds)

        napper = flow(implementation = _napper_impl)

        def main():
            a = fctx().actions
            a.now()
            child = a.run(napper, seconds = 86400)
            a.receive(timeout = 600, check = False)
            a.now()
            a.wait([child], timeout = 3600)
            a.now()
            a.sleep(60)
            a.now()
            a.wait([child])
            a.now()

        if __name__ == "__flow__":
            main()
    """)
    flow = grid.wait(grid.start(script))
    assert flow["status"] == "completed", flow
    t0, t1, t2, t3, t4 = nows(flow)
    assert (t1 - t0, t2 - t1, t3 - t2) == (600, 3600, 60)
    assert t4 - t0 == DAY  # the child's day-long sleep ended last
    kinds = {e["kind"]: e for e in flow["journal"]}
    assert "timeout" in kinds["receive"]["result"]["error"]


def test_time_stands_still_while_a_request_is_in_flight(grid: Grid, http_server: CountingServer) -> None:
    http_server.slow_seconds = 1.0
    sleeper = grid.write("hour.flow", """
        a = fctx().actions
        a.sleep(3600)
        a.now()
    """)
    caller = grid.write("caller.flow", f"""
        a = fctx().actions
        a.now()
        a.http("GET", "{http_server.url}/slow")
        a.now()
    """)
    calling = grid.start(caller)
    wait_for(http_server.arrived.is_set, "the request to arrive")
    sleeping = grid.start(sleeper)
    called = grid.wait(calling)
    assert called["status"] == "completed", called
    before, after = nows(called)
    assert after == before  # the sleeper's deadline waited for the request to be answered
    slept = grid.wait(sleeping)
    assert nows(slept)[0] - next(e for e in slept["journal"] if e["kind"] == "sleep")["requested_at"] == 3600


def test_an_hourly_schedule_fires_24_times_in_order_in_a_virtual_day(grid: Grid) -> None:
    built = build_bundle(grid.write("tick.flow", "fctx().actions.now()\n"))
    grid.client.upload_bundle(built.data, built.digest)
    grid.client.deploy("tick", built.digest)
    schedule = grid.client.put_schedule("hourly", {"deployment": "tick", "cron": "0 * * * *", "overlap": "skip",
                                                   "catch_up": "none"})
    first = schedule["next_fire"]
    wait_for(lambda: len([r for r in fires(grid, "hourly") if r["outcome"] == "started"]) >= 24, "24 fires", timeout=60)
    grid.client.schedule_action("hourly", "pause")
    rows = [r for r in fires(grid, "hourly")][:24]
    assert [r["fire_time"] for r in rows] == [first + 3600 * n for n in range(24)]
    assert {r["outcome"] for r in rows} == {"started"}  # none skipped (each ran before the next hour) or missed
    for row in rows:
        flow = grid.wait(row["flow_id"])
        assert nows(flow) == [row["fire_time"]]  # the flow ran at its fire time, to the second
