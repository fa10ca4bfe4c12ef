"""One snapshot per screen of ``flowmetal tui``, at 80x24.

The app runs against a grid state recorded from a real grid (see ``tui_recorded.py``) with its
clock frozen, so ages, durations and open bars are the same on every run. Update the SVGs after
an intended change with ``pytest tests/tui/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input
from tui_recorded import QUOTA_RECORDING, RecordedGrid
from tui_gridkit import until

from flowmetal_cli.client import GridClient, GridUnreachable
from tui.app import FlowmetalApp
from tui.screens.prompts import DelayScreen
from tui.widgets.journal import JournalTable
from tui.widgets.quotas import QuotaView
from tui.widgets.workers import WorkersTable

pytestmark = pytest.mark.timeout(60)
Compare = Callable[..., bool]
GRID = RecordedGrid.load()
QUOTAS = RecordedGrid.load(QUOTA_RECORDING)


def recorded_app(role: str = "replayed", **kwargs: Any) -> FlowmetalApp:
    return FlowmetalApp(GRID.client, clock=lambda: GRID.now, select=GRID.roles[role], poll_wait=0.1,
                        contexts=lambda: [("local", GRID.url), ("staging", "https://grid.example.com")], **kwargs)


def loaded(*then: Callable[[FlowmetalApp], None]) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """Before the screenshot: wait until the selected flow, its journal and the processes are shown."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, FlowmetalApp)
        await until(pilot, lambda: app.detail is not None and app.query_one(JournalTable).entries
                    and app.processes and len(app.index.flows) == len(GRID.data["flows"]), "the recorded state")
        for step in then:
            step(app)
        await pilot.pause()

    return run_before


def test_main_screen_shows_a_replay_and_steps_the_source(snap_compare: Compare) -> None:
    assert snap_compare(recorded_app("replayed"), press=["n", "n", "n"], run_before=loaded())


def test_main_screen_wide(snap_compare: Compare) -> None:
    assert snap_compare(recorded_app("steps"), press=["e"], run_before=loaded(), terminal_size=(130, 34))


def test_detail_tab_of_a_failed_flow(snap_compare: Compare) -> None:
    assert snap_compare(recorded_app("failed"), press=["e", "2"], run_before=loaded())


def test_log_tab(snap_compare: Compare) -> None:
    assert snap_compare(recorded_app("steps"), press=["3"], run_before=loaded())


def test_workers_tab(snap_compare: Compare) -> None:
    assert snap_compare(recorded_app("replayed"), press=["4"], run_before=loaded())


def test_help_screen(snap_compare: Compare) -> None:
    assert snap_compare(recorded_app(), press=["question_mark"], run_before=loaded())


def test_kill_confirmation(snap_compare: Compare) -> None:
    def pick_worker(app: FlowmetalApp) -> None:
        app.action_tab("workers")
        table = app.query_one(WorkersTable)
        table.focus()
        table.move_cursor(row=[p["role"] for p in table.processes].index("worker"))

    assert snap_compare(recorded_app(), press=["k"], run_before=loaded(pick_worker))


def test_delay_dialog(snap_compare: Compare) -> None:
    async def dialog_shown(pilot: Pilot[Any]) -> None:
        await loaded()(pilot)
        await pilot.press("d")
        app = pilot.app
        await until(pilot, lambda: isinstance(app.screen, DelayScreen) and app.screen.query_one(Input).has_focus,
                    "the delay dialog")
        # The input's cursor blinks every 0.5 s: hold it visible, or a slow run shoots it dark.
        app.screen.query_one(Input).cursor_blink = False

    assert snap_compare(recorded_app("waiter"), run_before=dialog_shown)


def test_push_dialog(snap_compare: Compare) -> None:
    assert snap_compare(recorded_app("steps"), press=["u"], run_before=loaded())


def test_quotas_tab(snap_compare: Compare) -> None:
    async def shown(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, FlowmetalApp)
        await until(pilot, lambda: app.detail is not None and len(app.index.flows) == len(QUOTAS.data["flows"]),
                    "the recorded flows")
        await pilot.press("5")
        await until(pilot, lambda: len(app.query_one(QuotaView).rows) == len(QUOTAS.data["quota_tree"]["nodes"]),
                    "the recorded quota tree")
        await pilot.pause()

    app = FlowmetalApp(QUOTAS.client, clock=lambda: QUOTAS.now, select=QUOTAS.roles["holder"], poll_wait=0.1)
    assert snap_compare(app, run_before=shown)


def test_lost_grid(snap_compare: Compare) -> None:
    def unreachable() -> GridClient:
        raise GridUnreachable("cannot reach the grid of context 'local' at http://127.0.0.1:8765 (connection refused)")

    async def shown(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, FlowmetalApp)
        await until(pilot, lambda: app.connected is False, "the lost connection")

    app = FlowmetalApp(unreachable, clock=lambda: GRID.now, retry_every=30)
    assert snap_compare(app, run_before=shown)
