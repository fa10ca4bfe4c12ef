"""``FlowmetalApp``: the interactive debugger behind ``flowmetal tui``.

The UI thread never waits on the grid. Each read or operation runs in a Textual thread worker
that talks through a ``GridSession`` and posts a message back (``FlowsLoaded``, ``FlowLoaded``,
``EventsReceived``...). One long-running worker follows the grid's event stream; the events only
mark what must be re-read, and a short timer batches those reads. A grid that stops answering is
shown in the status bar and retried; nothing here lets a grid error escape to Textual.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, DataTable, Footer, Input, Log, Static, TabbedContent, TabPane
from textual.worker import Worker, get_current_worker

from flowmetal_cli.client import GridClient, GridUnreachable
from flowmetal_cli.connect import connect
from flowmetal_cli.contexts import Config
from tui import model
from tui.model import FINISHED, STATUSES, FlowIndex
from tui.screens.confirm import ConfirmScreen
from tui.screens.help import HelpScreen
from tui.screens.prompts import DelayScreen, OpenScreen
from tui.screens.push import PushScreen
from tui.session import FlowDetail, GridSession, PushTarget, latest_cursor
from tui.widgets.detail import DetailView
from tui.widgets.flow_tree import FlowTree
from tui.widgets.journal import JournalTable
from tui.widgets.quotas import QuotaView
from tui.widgets.source import SourceView
from tui.widgets.stepbar import StepBar
from tui.widgets.workers import WorkersTable

Clock = Callable[[], float]


def configured_contexts() -> list[tuple[str, str]]:
    """Every context of the config file, as (name, URL); the push dialog offers these."""
    return [(context.name, context.url or "(local grid, not running)") for context in Config.load().all()]


def connect_context(name: str) -> GridClient:
    """A client for a push target (a local target must already be running)."""
    return connect(name, autostart=False)


class FlowmetalApp(App[None]):
    """The debugger. ``client_factory`` makes a connected ``GridClient`` (called again after a lost connection)."""

    CSS_PATH = "app.tcss"
    TITLE = "flowmetal"
    ENABLE_COMMAND_PALETTE = False  # every command has a key; the footer needs the room
    BINDINGS = [
        Binding("question_mark", "help", "Help"),
        Binding("n", "step(1)", "Next"),
        Binding("p", "step(-1)", "Prev"),
        Binding("e", "first_error", "Error"),
        Binding("c", "cancel_flow", "Cancel"),
        Binding("k", "kill", "Kill"),
        Binding("f", "inject_fail", "Fail"),
        Binding("d", "inject_delay", "Delay"),
        Binding("r", "rerun", "Rerun"),
        Binding("u", "push", "Push"),
        Binding("o", "open_script", "Open script", show=False),
        Binding("slash", "filter", "Filter", show=False),
        Binding("s", "cycle_status", "Status filter", show=False),
        Binding("g", "step_to('first')", "First entry", show=False),
        Binding("G", "step_to('last')", "Last entry", show=False),
        Binding("1", "tab('source')", "Source", show=False),
        Binding("2", "tab('detail')", "Detail", show=False),
        Binding("3", "tab('log')", "Log", show=False),
        Binding("4", "tab('workers')", "Workers", show=False),
        Binding("5", "tab('quotas')", "Quotas", show=False),
        Binding("q", "quit", "Quit"),
    ]
    HELP_KEYS = [
        ("?", "this help"), ("↑ ↓ Enter", "move in the focused pane; Tab moves between panes"),
        ("n / p", "step forward / back through the journal (source, request, result follow)"),
        ("g / G", "first / last journal entry"), ("e", "jump to the first failed entry"),
        ("/", "filter flows by text (Esc returns to the tree)"), ("s", "filter flows by status (cycles)"),
        ("1 2 3 4 5", "Source, Detail, Log, Workers, Quotas tab"),
        ("c", "cancel the selected flow and its children (asks first)"),
        ("k", "kill (SIGKILL) the worker holding the selected flow; in the Workers tab, the highlighted process"),
        ("f", "fail the next action of the selected flow"), ("d", "delay the next action by N seconds"),
        ("r", "re-run the selected flow's root with the same bundle and arguments"),
        ("u", "push the selected flow's bundle to another context"), ("o", "open a script and run it"),
        ("q", "quit"),
    ]

    class FlowsLoaded(Message):
        def __init__(self, flows: list[dict[str, Any]]) -> None:
            super().__init__()
            self.flows = flows

    class FlowLoaded(Message):
        def __init__(self, detail: FlowDetail) -> None:
            super().__init__()
            self.detail = detail

    class ProcessesLoaded(Message):
        def __init__(self, processes: list[dict[str, Any]]) -> None:
            super().__init__()
            self.processes = processes

    class QuotasLoaded(Message):
        def __init__(self, tree: dict[str, Any]) -> None:
            super().__init__()
            self.tree = tree

    class EventsReceived(Message):
        def __init__(self, events: list[dict[str, Any]]) -> None:
            super().__init__()
            self.events = events

    class GridConnected(Message):
        def __init__(self, where: str) -> None:
            super().__init__()
            self.where = where

    class GridLost(Message):
        def __init__(self, reason: str) -> None:
            super().__init__()
            self.reason = reason

    class FlowStarted(Message):
        def __init__(self, flow: dict[str, Any], verb: str) -> None:
            super().__init__()
            self.flow = flow
            self.verb = verb

    class Reported(Message):
        """An operation's outcome, for the user (a notification) and for tests (``app.reports``)."""

        def __init__(self, text: str, severity: str = "information") -> None:
            super().__init__()
            self.text = text
            self.severity = severity

    def __init__(
        self, client_factory: Callable[[], GridClient], *, clock: Clock = time.time, open_file: Path | None = None,
        select: str | None = None, poll_wait: float = 1.0, retry_every: float = 1.0,
        contexts: Callable[[], list[tuple[str, str]]] = configured_contexts,
        context_connector: Callable[[str], GridClient] = connect_context,
    ) -> None:
        super().__init__()
        self.client_factory = client_factory
        self.clock = clock
        self.open_file = open_file
        self.poll_wait = poll_wait
        self.retry_every = retry_every
        self.contexts = contexts
        self.context_connector = context_connector
        self.session = GridSession(client_factory)
        self.index = FlowIndex()
        self.selected: str | None = None
        self.detail: FlowDetail | None = None
        self.processes: list[dict[str, Any]] = []
        self.histories: dict[str, dict[int, dict[str, Any]]] = {}
        self._buffered: dict[str, list[dict[str, Any]]] = {}  # live events of roots whose history is loading
        self.connected: bool | None = None
        self.where = "connecting…"
        self.lost_reason = ""
        self.filter_text = ""
        self.filter_status: str | None = None
        self.reports: list[str] = []
        self.status_line = Text()
        self._want_select = select
        self._flows_loaded = False
        self._dirty = {"flows": False, "detail": False, "processes": False, "quotas": False}
        self._log_last = 0
        self._ticks = 0

    # -- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        # The panes are kept as attributes: handlers that run while the app shuts down must not query.
        self.status_bar = Static("", id="status")
        self.sidebar = Vertical(id="sidebar")
        self.filter_input = Input(placeholder="/ filter flows", id="filter", compact=True)
        self.flow_tree = FlowTree(id="flows")
        self.right = Vertical(id="right")
        self.journal_box = Vertical(id="journal-box")
        self.journal = JournalTable(id="journal")
        self.stepbar = StepBar(id="stepbar")
        self.tabs = TabbedContent(id="tabs", initial="source")
        self.source_view = SourceView(id="source-view")
        self.detail_view = DetailView(id="detail-view")
        # Log, not RichLog: a RichLog in a hidden tab may defer its writes until a resize that never
        # comes, and print lines are plain text anyway.
        self.log_view = Log(id="log-view", max_lines=5000)
        self.workers_view = WorkersTable(id="workers-table")
        self.quota_view = QuotaView(id="quota-view")
        yield self.status_bar
        with Horizontal(id="main"):
            with self.sidebar:
                yield self.filter_input
                yield self.flow_tree
            with self.right:
                with self.journal_box:
                    yield self.journal
                yield self.stepbar
                with self.tabs:
                    with TabPane("1 Source", id="source"):
                        yield self.source_view
                    with TabPane("2 Detail", id="detail"):
                        yield self.detail_view
                    with TabPane("3 Log", id="log"):
                        yield self.log_view
                    with TabPane("4 Workers", id="workers"):
                        yield self.workers_view
                    with TabPane("5 Quotas", id="quotas"):
                        yield self.quota_view
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sidebar.border_title = "Flows"
        self.journal_box.border_title = "Journal"
        self._render_status()
        self._render_tree()  # at once, not on the first tick: the first screen is the same however slow the start
        self._render_selection()
        self.flow_tree.focus()
        self.set_interval(0.2, self._flush_reads)
        self.set_interval(1.0, self._tick)
        self.follow_events()
        if self.open_file is not None:
            self.start_script(self.open_file)

    # -- grid I/O (thread workers) ---------------------------------------------------------

    @work(thread=True, exclusive=True, group="follow", name="follow events", exit_on_error=False)
    def follow_events(self) -> None:
        """Long-poll the grid's event stream; reconnect through the factory when the grid goes away."""
        worker = get_current_worker()
        client: GridClient | None = None
        cursor = 0
        while not worker.is_cancelled:
            try:
                if client is None:
                    client = self.client_factory()
                    cursor = latest_cursor(client)
                    self.post_message(self.GridConnected(f"{client.context} · {client.url}"))
                page = client.events(after=cursor, wait=self.poll_wait)
                cursor = int(page["cursor"])
                if page["events"] and not worker.is_cancelled:
                    self.post_message(self.EventsReceived(page["events"]))
            except Exception as exc:  # shown and retried: a lost grid must never end the app
                if client is not None:
                    client.close()
                    client = None
                if not worker.is_cancelled:
                    self.post_message(self.GridLost(str(exc) or type(exc).__name__))
                deadline = time.monotonic() + self.retry_every
                while not worker.is_cancelled and time.monotonic() < deadline:
                    time.sleep(0.05)
        if client is not None:
            client.close()

    @work(thread=True, exclusive=True, group="flows", name="load flows", exit_on_error=False)
    def load_flows(self) -> None:
        flows = self._guarded(self.session.flows)
        if flows is not None and not get_current_worker().is_cancelled:
            self.post_message(self.FlowsLoaded(flows))

    @work(thread=True, exclusive=True, group="detail", name="load flow", exit_on_error=False)
    def load_detail(self, flow_id: str, with_events: bool) -> None:
        detail = self._guarded(lambda: self.session.detail(flow_id, with_events))
        if detail is not None and not get_current_worker().is_cancelled:
            self.post_message(self.FlowLoaded(detail))

    @work(thread=True, exclusive=True, group="processes", name="load processes", exit_on_error=False)
    def load_processes(self) -> None:
        processes = self._guarded(self.session.processes)
        if processes is not None and not get_current_worker().is_cancelled:
            self.post_message(self.ProcessesLoaded(processes))

    @work(thread=True, exclusive=True, group="quotas", name="load quotas", exit_on_error=False)
    def load_quotas(self) -> None:
        tree = self._guarded(self.session.quota_tree)
        if tree is not None and not get_current_worker().is_cancelled:
            self.post_message(self.QuotasLoaded(tree))

    @work(thread=True, group="operations", name="operation", exit_on_error=False)
    def operate(self, work: Callable[[], Any], done: Callable[[Any], str], started: str | None = None) -> None:
        """Run one operation; report ``done(result)``, or the error, to the user."""
        result = self._guarded(work, report=True)
        if result is None:
            return
        if isinstance(result, dict) and started:
            self.post_message(self.FlowStarted(result, started))
        self.post_message(self.Reported(done(result)))

    def start_script(self, path: Path) -> None:
        self.operate(lambda: self.session.start_script(path),
                     lambda flow: f"started {flow['flow']} #{flow['id']}", started="started")

    def _guarded(self, work: Callable[[], Any], report: bool = False) -> Any:
        """Run ``work`` in a worker thread; any failure becomes a message, never an exception in Textual."""
        try:
            return work()
        except Exception as exc:
            text = str(exc) or type(exc).__name__
            unreachable = isinstance(exc, GridUnreachable)
            if unreachable:
                self.post_message(self.GridLost(text))
            # A read that failed because the grid is away is already shown in the status bar.
            if report or (not unreachable and self.connected):
                self.post_message(self.Reported(text, "error"))
            return None

    # -- messages from the workers -------------------------------------------------------------

    @on(GridConnected)
    def _on_connected(self, message: GridConnected) -> None:
        self.connected, self.where, self.lost_reason = True, message.where, ""
        self.histories.clear()  # events may have been missed while away: histories are read again
        self._dirty.update(flows=True, detail=True, processes=True, quotas=self._quotas_shown())
        self._render_status()

    @on(GridLost)
    def _on_lost(self, message: GridLost) -> None:
        first = self.connected is not False
        self.connected, self.lost_reason = False, message.reason
        self.session.drop()
        self._render_status()
        if first:
            self.reports.append(f"lost: {message.reason}")

    @on(FlowsLoaded)
    def _on_flows(self, message: FlowsLoaded) -> None:
        self.index = FlowIndex.of(message.flows)
        if self.detail is not None and self.detail.flow["id"] in self.index.flows:
            self.detail = FlowDetail({**self.detail.flow, **self.index.flows[self.detail.flow["id"]]},
                                     self.detail.journal, self.detail.events, self.detail.files)
        self._render_tree()
        tree = self.flow_tree
        wanted = self._want_select
        if wanted and wanted in self.index.flows:
            self._want_select = None
            if not tree.select_flow(wanted):  # filtered out of the tree: show it all the same
                self.select_flow(wanted)
        elif wanted and not self._flows_loaded:  # asked for, but older than the flows listed
            self.select_flow(wanted)
        elif not self._flows_loaded and self.selected is None and tree.flow_ids:
            tree.select_flow(tree.flow_ids[0])
        self._flows_loaded = True
        self._render_workers()
        self._render_quotas()

    @on(QuotasLoaded)
    def _on_quotas(self, message: QuotasLoaded) -> None:
        self._render_quotas(model.quota_rows(list(message.tree.get("nodes") or [])))

    @on(FlowLoaded)
    def _on_flow(self, message: FlowLoaded) -> None:
        detail = message.detail
        flow_id, root = detail.flow["id"], detail.flow["root"]
        if flow_id != self.selected:
            return
        if detail.events is not None:
            history = {e["id"]: e for e in detail.events}
            history.update((e["id"], e) for e in self._buffered.pop(root, []))
            self.histories[root] = history
        fresh = self.detail is None or self.detail.flow["id"] != flow_id
        relog = fresh or detail.events is not None
        self.detail = detail
        record = {k: v for k, v in detail.flow.items() if k != "children"}
        if flow_id in self.index.flows or not self.index.flows:
            self.index.add(record)
        self._render_selection(fresh)
        if relog:
            self._render_log()

    @on(ProcessesLoaded)
    def _on_processes(self, message: ProcessesLoaded) -> None:
        self.processes = message.processes
        self._render_workers()

    @on(EventsReceived)
    def _on_events(self, message: EventsReceived) -> None:
        selected_root = self.detail.flow["root"] if self.detail else None
        scope = self._log_scope()
        for event in message.events:
            kind, root = event.get("type"), event.get("root")
            if kind in ("flow", "log"):
                if root in self.histories:
                    self.histories[root][event["id"]] = event
                elif root in self._buffered:
                    self._buffered[root].append(event)
            if kind == "flow":
                self._dirty["flows"] = self._dirty["processes"] = True
                self._dirty["quotas"] = self._dirty["quotas"] or self._quotas_shown()
            if root == selected_root and event.get("flow_id") == self.selected:
                self._dirty["detail"] = True
            if kind == "log" and root == selected_root and event.get("flow_id") in scope and root in self.histories:
                self._write_log(event)

    @on(FlowStarted)
    def _on_started(self, message: FlowStarted) -> None:
        self._want_select = message.flow["id"]
        if message.flow["id"] not in self.index.flows:
            self.index.add(message.flow)
        self._dirty["flows"] = True

    @on(Reported)
    def _on_reported(self, message: Reported) -> None:
        self.reports.append(message.text)
        self.notify(message.text, severity=message.severity,  # type: ignore[arg-type]
                    timeout=8 if message.severity == "error" else 4)

    # -- batching reads ------------------------------------------------------------------------

    def _flush_reads(self) -> None:
        if not self.connected or not self.is_running:
            return
        if self._dirty["flows"]:
            self._dirty["flows"] = False
            self.load_flows()
        if self._dirty["detail"] and self.selected:
            self._dirty["detail"] = False
            self._load_selected()
        if self._dirty["processes"]:
            self._dirty["processes"] = False
            self.load_processes()
        if self._dirty["quotas"]:
            self._dirty["quotas"] = False
            self.load_quotas()

    def _tick(self) -> None:
        if not self.is_running:
            return
        self._ticks += 1
        if self.connected and self._ticks % 2 == 0:
            self._dirty["processes"] = True
            self._dirty["quotas"] = self._dirty["quotas"] or self._quotas_shown()  # the rate window moves on
        self._render_tree()
        if self.detail is not None and self.detail.flow.get("status") not in FINISHED:
            self._render_selection()

    def _load_selected(self) -> None:
        assert self.selected is not None
        flow = self.index.get(self.selected) or (self.detail.flow if self.detail else {})
        root = flow.get("root")
        with_events = root is None or root not in self.histories
        if with_events and root:  # hold this tree's live events until its history arrives
            self._buffered = {root: self._buffered.get(root, [])}
        self.load_detail(self.selected, with_events)

    # -- rendering -----------------------------------------------------------------------------

    def _render_status(self) -> None:
        text = Text()
        text.append(" flowmetal ", style="bold reverse")
        if self.connected is False:
            text.append(f" ⚠ grid unreachable, retrying: {model.clip(self.lost_reason, 90)}", style="bold bright_red")
        elif self.connected:
            text.append(f" ● {self.where}", style="green")
        else:
            text.append(" ○ connecting…", style="yellow")
        self.status_line = text
        bar = self.status_bar
        bar.set_class(self.connected is False, "lost")
        bar.update(text)

    def _render_tree(self) -> None:
        visible = self.index.visible(self.filter_text, self.filter_status)
        self.flow_tree.show(self.index, visible, self.clock(), self.selected)
        sidebar = self.sidebar
        shown = sum(1 for fid in visible if fid in self.index.flows)
        status = f"status={self.filter_status} · " if self.filter_status else ""
        sidebar.border_subtitle = f"{status}{shown}/{len(self.index.flows)}"

    def _render_selection(self, fresh: bool = False) -> None:
        table = self.journal
        box = self.journal_box
        if self.detail is None:
            table.reset()
            box.border_title = "Journal"
            box.border_subtitle = "select a flow" if self.selected is None else "loading…"
            self._render_step()
            return
        flow, journal, now = self.detail.flow, self.detail.journal, self.clock()
        root = flow["root"]
        if root in self.histories:
            resumes = model.resumes_from_events(self.histories[root].values(), flow["id"])
        else:
            resumes = model.resumes_from_journal(journal)
        # A live flow is followed: opened at its newest entry, and kept there while the cursor is on it.
        current = None if fresh else table.current_entry()
        shown = table.entries
        following = current is None or (bool(shown) and current["seq"] == shown[-1]["seq"])
        keep = current["seq"] if current else None
        if journal and following and flow.get("status") not in FINISHED:
            keep = journal[-1]["seq"]
        table.show(flow, journal, resumes, model.flow_span(flow, journal, now), now, keep)
        title = Text("Journal · ")
        title.append_text(model.status_text(str(flow.get("status")), with_word=True))
        title.append(f" {model.clip(str(flow.get('flow')), 24)} #{model.short_id(flow['id'])}")
        box.border_title = title.markup
        replays = f" · {len(resumes)} resume{'s' if len(resumes) != 1 else ''}" if resumes else ""
        box.border_subtitle = f"{len(journal)} entries{replays} · {flow.get('quota')}"
        self._render_step()

    def _render_step(self) -> None:
        table = self.journal
        row = table.current()
        entries = table.entries
        position = entries.index(row) + 1 if isinstance(row, dict) and row in entries else None
        self.stepbar.show(row, position, len(entries))
        flow = self.detail.flow if self.detail else None
        files = self.detail.files if self.detail else {}
        site = model.callsite_of(row if isinstance(row, dict) else None)
        if site is not None:
            self.source_view.show(files, site[0], site[1])
        else:
            entry = (flow or {}).get("entry") or {}
            self.source_view.show(files, entry.get("module") if isinstance(entry, dict) else None, None)
        self.detail_view.show(flow, row, self.clock())

    def _log_scope(self) -> set[str]:
        if self.selected is None:
            return set()
        return {self.selected} | self.index.descendants(self.selected)

    def _render_log(self) -> None:
        log = self.log_view
        log.clear()
        self._log_last = 0
        if self.detail is None:
            return
        scope = self._log_scope()
        history = self.histories.get(self.detail.flow["root"], {})
        for event in sorted(history.values(), key=lambda e: e["id"]):
            if event.get("type") == "log" and event.get("flow_id") in scope:
                self._write_log(event)

    def _write_log(self, event: dict[str, Any]) -> None:
        if event["id"] <= self._log_last:
            return
        self._log_last = event["id"]
        prefix = ""
        if event.get("flow_id") != self.selected:  # a child's line, named as `docker compose` does
            prefix = f"{event.get('name') or model.short_id(event.get('flow_id'))} | "
        self.log_view.write_line(prefix + str(event.get("text", "")))

    def _render_workers(self) -> None:
        self.workers_view.show(self.processes, self.index)

    def _quotas_shown(self) -> bool:
        return self.tabs.active == "quotas"

    def _render_quotas(self, rows: list[model.QuotaRow] | None = None) -> None:
        self.quota_view.show(rows, self.index)

    # -- selection -----------------------------------------------------------------------------

    def select_flow(self, flow_id: str | None) -> None:
        if flow_id == self.selected:
            return
        self.selected = flow_id
        self.detail = None
        self._render_selection()
        self._render_log()
        if flow_id is not None:
            self._load_selected()

    @on(FlowTree.FlowHighlighted)
    def _on_flow_highlighted(self, message: FlowTree.FlowHighlighted) -> None:
        if message.flow_id is not None:
            self.select_flow(message.flow_id)

    @on(DataTable.RowHighlighted, "#journal")
    def _on_entry_highlighted(self, message: DataTable.RowHighlighted) -> None:
        self._render_step()

    @on(TabbedContent.TabActivated, "#tabs")
    def _on_tab(self, message: TabbedContent.TabActivated) -> None:
        shown = message.pane.id == "quotas"
        # The quota tree is not about the selected flow: it takes the journal's room while shown.
        self.right.set_class(shown, "quotas")
        if shown:  # read at once, however the tab was chosen (key or click)
            self._dirty["quotas"] = True

    @on(Input.Changed, "#filter")
    def _on_filter(self, message: Input.Changed) -> None:
        self.filter_text = message.value
        self._render_tree()

    @on(Input.Submitted, "#filter")
    def _on_filter_done(self, message: Input.Submitted) -> None:
        self.flow_tree.focus()

    @on(Button.Pressed, "#stepbar Button")
    def _on_step_button(self, message: Button.Pressed) -> None:
        if message.button.id == "step-back":
            self.action_step(-1)
        elif message.button.id == "step-next":
            self.action_step(1)
        else:
            self.action_first_error()

    def on_key(self, event: Any) -> None:
        if event.key == "escape" and isinstance(self.focused, Input) and self.focused.id == "filter":
            self.flow_tree.focus()

    # -- actions: reading ----------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.HELP_KEYS))

    def action_filter(self) -> None:
        self.filter_input.focus()

    def action_cycle_status(self) -> None:
        choices: list[str | None] = [None, *STATUSES]
        self.filter_status = choices[(choices.index(self.filter_status) + 1) % len(choices)]
        self._render_tree()

    def action_tab(self, tab: str) -> None:
        self.tabs.active = tab
        if tab == "workers":
            self._dirty["processes"] = True

    def action_step(self, delta: int) -> None:
        table = self.journal
        if not table.entries:
            self.notify("no journal entries to step through", severity="warning")
        elif not table.step(delta):
            self.notify("at the last entry" if delta > 0 else "at the first entry", timeout=2)

    def action_step_to(self, where: str) -> None:
        entries = self.journal.entries
        if entries:
            self.journal.goto_seq(entries[0 if where == "first" else -1]["seq"])

    def action_first_error(self) -> None:
        table = self.journal
        position = model.first_error(table.entries)
        if position is not None:
            table.goto_seq(table.entries[position]["seq"])
            return
        flow = self.detail.flow if self.detail else None
        if flow and flow.get("status") == "failed":
            self.tabs.active = "detail"
            message = (flow.get("error") or {}).get("message", "")
            self.notify(f"no action failed; the flow itself failed: {model.clip(message, 120)}", severity="warning")
        else:
            self.notify("no failed entry in this journal", timeout=3)

    # -- actions: operations -----------------------------------------------------------------

    def _selected_flow(self, live: bool = False) -> dict[str, Any] | None:
        flow = self.detail.flow if self.detail else self.index.get(self.selected)
        if flow is None:
            self.notify("select a flow first", severity="warning")
            return None
        if live and flow.get("status") in FINISHED:
            self.notify(f"{flow.get('flow')} is already {flow.get('status')}", severity="warning")
            return None
        return flow

    def action_cancel_flow(self) -> None:
        flow = self._selected_flow(live=True)
        if flow is None:
            return
        flow_id, name = str(flow["id"]), str(flow.get("flow"))

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.operate(lambda: self.session.call(lambda c: c.cancel(flow_id)),
                             lambda r: f"cancelled {name} #{model.short_id(flow_id)} "
                                       f"({len(r.get('cancelled', []))} flow(s))")

        self.push_screen(ConfirmScreen(f"Cancel {name} #{flow_id} and its children?", "Cancel flow"), confirmed)

    def kill_target(self) -> dict[str, Any] | None:
        """The process ``k`` kills: the highlighted one in the Workers pane, else the selected flow's worker."""
        workers = self.workers_view
        if self.focused is workers:
            return workers.current()
        flow = self.detail.flow if self.detail else self.index.get(self.selected)
        holder = (flow or {}).get("worker")
        return next((p for p in self.processes if holder and p.get("id") == holder), None)

    def action_kill(self) -> None:
        target = self.kill_target()
        if target is None:
            self.notify("no worker holds the selected flow now (pick a process in the Workers tab, 4)",
                        severity="warning")
            return
        if target.get("role") == "supervisor":  # the grid survives any other process, not this one
            self.notify("the supervisor can't be killed from here (workers, connectors and the APIs can)",
                        severity="warning")
            return
        if target.get("pid") is None:  # a `flowmetal worker` elsewhere: no process of this grid's machine
            self.notify(f"{target.get('name')} runs elsewhere ({target.get('address') or 'another machine'}): "
                        "stop it there", severity="warning")
            return
        pid, label = int(target["pid"]), model.process_label(target)

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.operate(lambda: self.session.call(lambda c: c.kill(pid)), lambda r: f"killed {label}")
                self._dirty["processes"] = True

        self.push_screen(ConfirmScreen(f"Kill {label} with SIGKILL?", "Kill"), confirmed)

    def action_inject_fail(self) -> None:
        flow = self._selected_flow(live=True)
        if flow is not None:
            flow_id, name = str(flow["id"]), flow.get("flow")
            self.operate(lambda: self.session.call(lambda c: c.inject(flow_id, "fail")),
                         lambda r: f"armed: the next action of {name} #{model.short_id(flow_id)} fails")

    def action_inject_delay(self) -> None:
        flow = self._selected_flow(live=True)
        if flow is None:
            return
        flow_id, name = str(flow["id"]), str(flow.get("flow"))

        def chosen(seconds: float | None) -> None:
            if seconds is not None:
                self.operate(lambda: self.session.call(lambda c: c.inject(flow_id, "delay", seconds)),
                             lambda r: f"armed: the next action of {name} #{model.short_id(flow_id)} "
                                       f"is delayed {seconds:g}s")

        self.push_screen(DelayScreen(name), chosen)

    def action_rerun(self) -> None:
        flow = self._selected_flow()
        if flow is None:
            return
        root = self.index.get(flow.get("root")) or flow
        if root.get("parent"):
            self.notify("the root of this flow is not listed; select the root to re-run it", severity="warning")
            return
        self.operate(lambda: self.session.rerun(root), lambda new: f"re-ran {new['flow']} as #{new['id']}",
                     started="re-ran")

    def action_push(self) -> None:
        flow = self._selected_flow()
        if flow is None:
            return
        current = self.session.context
        try:
            contexts = [(name, about) for name, about in self.contexts() if name != current]
        except Exception as exc:
            self.notify(f"cannot read the contexts: {exc}", severity="error")
            return

        def chosen(target: PushTarget | None) -> None:
            if target is not None:
                self.push_bundle(flow, target)

        self.push_screen(PushScreen(str(flow.get("flow")), contexts), chosen)

    def push_bundle(self, flow: dict[str, Any], target: PushTarget) -> None:
        def push() -> dict[str, Any]:
            client = self.context_connector(target.context)
            try:
                return self.session.push(flow, client, target.name)
            finally:
                client.close()

        self.operate(push, lambda r: f"pushed {str(flow['bundle'])[:19]}… to {target.context} "
                                     f"as deployment {target.name}")

    def action_open_script(self) -> None:
        def chosen(path: Path | None) -> None:
            if path is not None:
                self.start_script(path)

        self.push_screen(OpenScreen(), chosen)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # _guarded catches grid errors; anything else is a bug, shown rather than ending the app.
        if event.state.name == "ERROR" and event.worker.error is not None:
            self.notify(f"internal error: {event.worker.error!r}", severity="error")
