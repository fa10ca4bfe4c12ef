"""The help screen: every key binding, and what the panes show."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

PANES = """\
[b]Flows[/b] (left): quota nodes, root flows, their children. ○ pending ▶ running ◷ waiting ✔ completed ✖ failed ⊘ cancelled; then the name, how long it ran (italic while it runs), after ·, its age and, for a pending or waiting flow, in yellow, why it is not running (the line of `flowmetal why`).
[b]Journal[/b]: each action of the selected flow: request, result, a timeline bar (█ ran, ░ still open), time requested and answered after the flow started, and the worker. [yellow]↻ resume[/yellow] rows mark where the flow resumed on a worker and how many entries it replayed; ⚡ when a lease was lost.
[b]Tabs[/b]: 1 Source (the line of the selected entry, ▶) · 2 Detail (request, result, traceback) · 3 Log (print output of the flow and its children) · 4 Workers (processes, pids, flows held) · 5 Quotas (the quota tree: a bar per limited usage, running, live, rate/min, resources, against its limit, red when full; pending, waiting and journal bytes; per-flow caps; then each pending or waiting flow with why it waits).
Stepping is read-only: it replays the recorded journal and needs no worker."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, bindings: list[tuple[str, str]]) -> None:
        super().__init__()
        self.bindings = bindings

    def compose(self) -> ComposeResult:
        keys = Table.grid(padding=(0, 2))
        keys.add_column(justify="right", style="bold", no_wrap=True)
        keys.add_column()
        for key, description in self.bindings:
            keys.add_row(key, description)
        with VerticalScroll(classes="dialog wide tall", id="help"):
            yield Static("[b]flowmetal tui[/b]: keys (Esc, q or ? closes)", classes="question")
            yield Static(keys, id="help-keys")
            yield Static(PANES, id="help-panes")

    def action_close(self) -> None:
        self.dismiss(None)
