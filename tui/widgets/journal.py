"""The journal timeline: one row per entry (request, result, times, worker, a bar) and a row per resumption."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from tui.model import (
    Resume,
    journal_rows,
    offset,
    summarize_args,
    summarize_result,
    timeline_bar,
)

Row = dict[str, Any] | Resume
FIXED = (("#", "seq", 3), ("kind", "kind", 7))
TRAILING = (("req", "req", 6), ("ans", "ans", 6), ("worker", "worker", 14))


def column_widths(available: int) -> tuple[int, int, int]:
    """Widths of the request, result and timeline columns: what the fixed columns leave, 40/30/30."""
    columns = len(FIXED) + 3 + len(TRAILING)
    spare = available - sum(w for *_, w in FIXED + TRAILING) - 2 * columns
    return max(16, spare * 4 // 10), max(12, spare * 3 // 10), max(10, spare * 3 // 10)


def resume_cells(resume: Resume, start: float, end: float, width: int) -> list[Text | str]:
    """A resumption in the columns of an entry: why (lost lease or wake-up), how many entries were replayed, when."""
    style = "bold yellow" if resume.lost_by else "yellow"
    why = f"⚡ lost {resume.lost_by}" if resume.lost_by else "woken up"
    mark = Text("·" * width, style="grey35")
    if resume.at is not None and end > start:
        column = min(max(int((resume.at - start) / (end - start) * width), 0), width - 1)
        mark = Text("·" * column, style="grey35")
        mark.append("↻", style=style)
        mark.append("·" * (width - column - 1), style="grey35")
    return [Text("↻", style=style), Text("resume", style=style), Text(why, style=style),
            Text(f"replayed {resume.replayed}", style=style), mark,
            offset(resume.at, start) if resume.at is not None else "", "", resume.worker or ""]


class JournalTable(DataTable[Any]):
    """Rows are rebuilt from the flow's journal on each refresh; the cursor stays on the same entry."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self.rows_data: list[Row] = []
        self._shown: tuple[Any, ...] | None = None
        self._last: tuple[Any, ...] | None = None
        self.widths = column_widths(0)

    def on_mount(self) -> None:
        self._add_columns()

    def _add_columns(self) -> None:
        request, result, bar = self.widths
        middle = (("request", "args", request), ("result", "result", result), ("timeline", "bar", bar))
        for label, key, width in FIXED + middle + TRAILING:
            self.add_column(label, key=key, width=width)

    def on_resize(self) -> None:
        widths = column_widths(self.scrollable_content_region.width)
        if widths == self.widths:
            return
        self.widths = widths
        current = self.current_entry()
        self.clear(columns=True)
        self._add_columns()
        self._shown = None
        if self._last is not None:
            flow, journal, resumes, span, now, _ = self._last
            self.show(flow, journal, resumes, span, now, current["seq"] if current else None)

    @property
    def entries(self) -> list[dict[str, Any]]:
        return [row for row in self.rows_data if isinstance(row, dict)]

    def current(self) -> Row | None:
        if 0 <= self.cursor_row < len(self.rows_data):
            return self.rows_data[self.cursor_row]
        return None

    def current_entry(self) -> dict[str, Any] | None:
        row = self.current()
        return row if isinstance(row, dict) else None

    def show(self, flow: dict[str, Any], journal: list[dict[str, Any]], resumes: list[Resume],
             span: tuple[float, float], now: float, keep: int | None) -> None:
        """Fill the table; the cursor goes to entry ``keep`` (a seq) when given, else to the first entry."""
        shape = (flow["id"], flow.get("status"), tuple((e["seq"], e.get("answered_at")) for e in journal),
                 tuple(resumes), span)
        self._last = (flow, journal, resumes, span, now, keep)
        if shape == self._shown:
            return
        self._shown = shape
        request, result, bar = self.widths
        self.rows_data = journal_rows(journal, resumes)
        start, end = span
        self.clear()
        for number, row in enumerate(self.rows_data):
            if isinstance(row, Resume):
                self.add_row(*resume_cells(row, start, end, bar), key=f"r{number}")
                continue
            self.add_row(
                Text(str(row["seq"]), style="bold"), row["kind"], summarize_args(row["kind"], row.get("args"), request),
                summarize_result(row["kind"], row.get("result"), result),
                timeline_bar(row, start, end, bar, now),
                offset(row.get("requested_at"), start), offset(row.get("answered_at"), start),
                row.get("worker") or "", key=f"e{row['seq']}",
            )
        self.goto_seq(keep if keep is not None else None)

    def goto_seq(self, seq: int | None) -> bool:
        """Move the cursor to entry ``seq`` (None: the first entry)."""
        for number, row in enumerate(self.rows_data):
            if isinstance(row, dict) and (seq is None or row["seq"] == seq):
                self.move_cursor(row=number, animate=False)
                return True
        return False

    def step(self, delta: int) -> bool:
        """Move to the next (``delta`` > 0) or previous entry, skipping resumption rows."""
        number = self.cursor_row + delta
        while 0 <= number < len(self.rows_data):
            if isinstance(self.rows_data[number], dict):
                self.move_cursor(row=number, animate=False)
                return True
            number += delta
        return False

    def reset(self) -> None:
        self._shown = self._last = None
        self.rows_data = []
        self.clear()
