"""The workers pane: each grid process (workers, connectors, APIs) with its pid, the flows and requests it holds."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from tui.model import FlowIndex, clip, short_id


class WorkersTable(DataTable[Any]):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self.processes: list[dict[str, Any]] = []

    def on_mount(self) -> None:
        for label, key, width in (("role", "role", 15), ("name", "name", 10), ("pid", "pid", 7),
                                  ("up", "alive", 6), ("flows", "flows", 5), ("holds", "holds", 30),
                                  ("restarts", "restarts", 8)):
            self.add_column(label, key=key, width=width)

    def current(self) -> dict[str, Any] | None:
        if 0 <= self.cursor_row < len(self.processes):
            return self.processes[self.cursor_row]
        return None

    def show(self, processes: list[dict[str, Any]], index: FlowIndex) -> None:
        keep = self.current()
        keep_name = keep.get("name") if keep else None
        self.processes = list(processes)
        self.clear()
        for process in self.processes:
            held = [f for f in index.flows.values() if process.get("id") and f.get("worker") == process.get("id")]
            holds = ", ".join(
                [f"{f.get('flow')}#{short_id(f['id'])}" for f in held]
                + [f"{r['kind']} {short_id(r['flow_id'])}/{r['seq']}" for r in process.get("requests") or []]
            )
            alive = Text("✔", style="green") if process.get("alive") else Text("✖ down", style="bright_red")
            self.add_row(process.get("role", ""), process.get("name", ""), str(process.get("pid") or "-"), alive,
                         str(process.get("flows", 0)), clip(holds, 30) or "-", str(process.get("restarts", 0)),
                         key=str(process.get("name")))
        for number, process in enumerate(self.processes):
            if process.get("name") == keep_name:
                self.move_cursor(row=number, animate=False)
