"""Pilot tests of ``flowmetal tui`` against a real local grid started by each test.

The app is built with the same client factory the CLI uses (``connect`` on the local context),
and every wait polls the app's state with a timeout; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Log
from tui_gridkit import FLOWS, LocalGrid, until

from flowmetal_cli.bundle import build_bundle
from flowmetal_cli.connect import connect
from flowmetal_cli.contexts import add_context
from grid_local.home import GridPaths
from grid_local.supervisor import start_background, stop_background
from tui.app import FlowmetalApp
from tui.model import Resume, first_error
from tui.screens.confirm import ConfirmScreen
from tui.screens.prompts import DelayScreen
from tui.screens.push import PushScreen
from tui.widgets.flow_tree import FlowTree
from tui.widgets.journal import JournalTable
from tui.widgets.quotas import QuotaView
from tui.widgets.source import SourceView
from tui.widgets.stepbar import StepBar

pytestmark = pytest.mark.timeout(60)
SIZE = (80, 24)


def make_app(**kwargs: Any) -> FlowmetalApp:
    return FlowmetalApp(lambda: connect(None), poll_wait=0.3, retry_every=0.2, **kwargs)


def status_of(app: FlowmetalApp) -> str | None:
    return app.detail.flow.get("status") if app.detail else None


def entries(app: FlowmetalApp) -> list[dict[str, Any]]:
    return app.query_one(JournalTable).entries


def log_lines(app: FlowmetalApp) -> list[str]:
    return list(app.query_one(Log).lines)


def step_text(app: FlowmetalApp) -> str:
    return app.query_one(StepBar).text.plain


async def test_select_a_flow_and_step_through_its_journal(grid: LocalGrid) -> None:
    flow = grid.start("steps.flow")
    grid.wait_flow(flow["id"], ("completed",))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        # The newest root flow is selected when the flows arrive; its journal fills the timeline.
        await until(pilot, lambda: app.selected == flow["id"] and len(entries(app)) == 8, "the journal of steps.flow")
        tree = app.query_one(FlowTree)
        child = next(f for f in app.index.flows.values() if f.get("parent") == flow["id"])
        assert tree.flow_ids[:2] == [flow["id"], child["id"]]
        source = app.query_one(SourceView)
        assert (source.shown_path, source.shown_line) == ("steps.flow", 10)
        assert "step 1/8" in step_text(app)

        await pilot.press("n")
        assert source.shown_line == 11 and "sleep" in step_text(app)
        await pilot.press("n")
        assert source.shown_line == 12 and "greet" in step_text(app)
        await pilot.press("p")
        assert source.shown_line == 11 and "step 2/8" in step_text(app)

        await pilot.press("e")  # the first failed entry: the receive that timed out
        current = app.query_one(JournalTable).current_entry()
        assert current is not None and current["kind"] == "receive" and source.shown_line == 13
        assert "timeout" in step_text(app)

        await pilot.press("G")
        assert "step 8/8" in step_text(app)
        await pilot.press("3")  # the Log tab: the tree's print lines, a child's prefixed with its name
        await until(pilot, lambda: "greet | hello from the child" in log_lines(app), "the log of the flow tree")
        assert log_lines(app)[0] == "starting" and log_lines(app)[-1] == "done"

        await pilot.click("#step-back")  # the buttons step too
        assert "step 7/8" in step_text(app)

        # Selecting the child shows its own journal and source line.
        await pilot.press("down")
        await until(pilot, lambda: app.selected == child["id"] and len(entries(app)) == 1, "the child's journal")
        assert source.shown_line == 4


async def test_kill_the_worker_holding_a_flow_shows_the_replay(grid: LocalGrid) -> None:
    flow = grid.start("until_told.flow")  # runs until the test sends it a message, however slow the machine
    app = make_app(select=flow["id"])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.selected == flow["id"] and len(entries(app)) >= 2
                    and app.kill_target() is not None, "until_told.flow running on a known worker")
        victim = app.kill_target()
        assert victim is not None and victim["role"] == "worker"
        await pilot.press("k")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the kill confirmation")
        await pilot.press("y")
        await until(pilot, lambda: any(r.startswith("killed") for r in app.reports), "the kill to be reported")

        def replay_marked() -> bool:
            rows = app.query_one(JournalTable).rows_data
            return any(isinstance(r, Resume) and r.lost_by == victim["id"] and r.replayed > 0 for r in rows)

        # The lease is released when the supervisor sees the worker die (or after it expires).
        await until(pilot, replay_marked, "a resume row after the killed worker", timeout=40)
        grid.client.send(flow["id"], "wake up")
        await until(pilot, lambda: status_of(app) == "completed", "until_told.flow to complete", timeout=40)
        resume = next(r for r in app.query_one(JournalTable).rows_data if isinstance(r, Resume))
        assert resume.worker != victim["id"]
        assert "replayed" in resume.describe()
        # Output is journaled: the replay did not print the first lines again.
        await pilot.press("3")
        await until(pilot, lambda: "woke up" in log_lines(app), "the last log line")
        assert log_lines(app).count("sleeping") == 1


async def test_cancel_a_waiting_flow_and_filter_the_tree(grid: LocalGrid) -> None:
    waiter = grid.start("waiter.flow")
    done = grid.start("steps.flow")
    grid.wait_flow(done["id"], ("completed",))
    app = make_app(select=waiter["id"])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: status_of(app) == "waiting", "waiter.flow to wait for its message")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the cancel confirmation")
        await pilot.press("n")  # no: nothing happens
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), "the dialog to close")
        assert status_of(app) == "waiting"
        await pilot.press("c", "y")
        await until(pilot, lambda: status_of(app) == "cancelled", "waiter.flow to be cancelled")
        await until(pilot, lambda: app.index.flows[waiter["id"]]["status"] == "cancelled", "the tree to know it")
        assert grid.flow(waiter["id"])["status"] == "cancelled"

        tree = app.query_one(FlowTree)
        await pilot.press("slash", *"waiter")
        await until(pilot, lambda: tree.flow_ids == [waiter["id"]], "the text filter")
        await pilot.press("escape")
        await pilot.press(*"sssss")  # status filter: pending, running, waiting, completed, failed
        assert app.filter_status == "failed"
        await pilot.press("s")
        assert app.filter_status == "cancelled" and tree.flow_ids == [waiter["id"]]
        await pilot.press("s")
        assert app.filter_status is None


async def test_delay_then_fail_the_next_action(grid: LocalGrid) -> None:
    flow = grid.start("ticker.flow")  # runs until the grid stops: still running when the injections are armed
    app = make_app(select=flow["id"])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: status_of(app) == "running" and len(entries(app)) >= 1, "ticker.flow to run")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, DelayScreen), "the delay dialog")
        await pilot.press("backspace", "0", ".", "3", "enter")
        await until(pilot, lambda: any("delayed 0.3s" in r for r in app.reports), "the delay to be armed")
        await pilot.press("f")
        await until(pilot, lambda: any("fails" in r for r in app.reports), "the failure to be armed")
        await until(pilot, lambda: status_of(app) == "failed" and first_error(entries(app)) is not None,
                    "ticker.flow to fail on the injected error", timeout=30)
        await pilot.press("e")
        current = app.query_one(JournalTable).current_entry()
        assert current is not None and "injected failure" in current["result"]["error"]
        assert "injected failure" in step_text(app)


async def test_open_a_script_then_rerun_it(grid: LocalGrid, home: Path) -> None:
    app = make_app(open_file=FLOWS / "steps.flow")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: any(r.startswith("started steps.flow") for r in app.reports), "the script to start")
        await until(pilot, lambda: app.selected is not None, "the started flow to be selected")
        first = app.selected
        assert first is not None
        await until(pilot, lambda: status_of(app) == "completed", "the opened flow to complete")
        record = grid.flow(first)
        await pilot.press("r")
        await until(pilot, lambda: app.selected not in (None, first), "the re-run flow to be selected")
        rerun = grid.flow(str(app.selected))
        assert (rerun["bundle"], rerun["args"], rerun["flow"]) == (record["bundle"], record["args"], record["flow"])
        await until(pilot, lambda: status_of(app) == "completed", "the re-run to complete")


async def test_push_the_bundle_to_another_context(grid: LocalGrid, monkeypatch: pytest.MonkeyPatch) -> None:
    # A second context naming the same grid: pushing copies nothing, but registers the deployment there.
    monkeypatch.setenv("MIRROR_TOKEN", "not-checked-by-a-local-grid")
    add_context("mirror", grid.url, token_env="MIRROR_TOKEN")
    flow = grid.start("steps.flow")
    app = make_app(select=flow["id"])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.detail is not None, "the flow to load")
        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, PushScreen), "the push dialog")
        dialog = app.screen
        assert isinstance(dialog, PushScreen) and [name for name, _ in dialog.contexts] == ["mirror"]
        await pilot.press("enter")
        await until(pilot, lambda: any(r.startswith("pushed") for r in app.reports), "the push to be reported")
    assert {d["name"]: d["digest"] for d in grid.client.deployments()} == {"steps": flow["bundle"]}


async def test_a_lost_grid_is_shown_and_reconnected(grid: LocalGrid) -> None:
    flow = grid.start("steps.flow")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.selected == flow["id"], "the first flow")
        stop_background(grid.paths)
        await until(pilot, lambda: app.connected is False, "the lost connection to show")
        assert "unreachable" in app.status_line.plain
        await pilot.press("n", "c")  # still usable while the grid is away
        state = start_background(GridPaths(grid.paths.home), workers=1)  # a new grid, on a new port
        await until(pilot, lambda: app.connected is True and state["url"] in app.where, "the reconnection")
        await until(pilot, lambda: len(entries(app)) == 8, "the journal to load again")


async def test_the_quotas_tab_shows_usage_against_a_limit_and_why_a_flow_waits(grid: LocalGrid) -> None:
    node = f"/local/{getpass.getuser()}/team"  # the local user is admin of /local/<user>: it sets limits below
    grid.client.quota_set(node, {"running": 1, "live": 4})
    built = build_bundle(FLOWS / "until_told.flow")  # runs, holding its slot, until it is sent a message
    grid.client.upload_bundle(built.data, built.digest)
    first = grid.client.start_flow(built.digest, {}, name="until_told.flow", quota=node)
    grid.wait_flow(first["id"], ("running",))
    second = grid.client.start_flow(built.digest, {}, name="until_told.flow", quota=node)
    reason = f"waiting for quota {node}: 1 of 1 running flows"
    app = make_app(select=first["id"])  # not the pending one: its reason must come with the flow list
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        view = app.query_one(QuotaView)

        def shown() -> str:
            return view.text.plain

        await until(pilot, lambda: "running" in shown() and "1/1" in shown() and reason in shown(),
                    "the full running limit and the pending flow's reason in the Quotas tab")
        row = next(r for r in view.rows if r.path == node)
        running = next(m for m in row.meters if m.name == "running")
        live = next(m for m in row.meters if m.name == "live")
        assert (running.used, running.limit, running.fraction, running.full) == (1, 1, 1.0, True)
        assert (live.used, live.limit, live.fraction) == (2, 4, 0.5) and row.pending == 1
        # The node's lines: a full bar (12 cells) for running, half of one for live.
        assert f"running   {'█' * 12} 1/1" in shown() and f"live      {'█' * 6}{'░' * 6} 2/4" in shown()
        assert [f["id"] for f in view.blocked] == [second["id"]]
        # The flow tree says it too, on the pending flow's line; and so does the detail pane.
        tree = app.query_one(FlowTree)
        await until(pilot, lambda: second["id"] in tree._flow_nodes and reason in str(tree._flow_nodes[second["id"]].label),
                    "the reason in the flow tree")

        # Room comes back: the first flow ends, the second runs, and the tab follows.
        grid.client.send(first["id"], "done")
        grid.wait_flow(second["id"], ("running",))
        await until(pilot, lambda: reason not in shown() and "Pending and waiting (0)" in shown(),
                    "the Quotas tab to see the second flow running")
    grid.client.send(second["id"], "done")
