"""The Quotas tab: the quota tree with a usage bar per limit, and why each pending or waiting flow waits."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from flowmetal_cli.console import human_bytes
from tui.model import FlowIndex, QuotaRow, blocked_flows, clip, flow_why, short_id, status_text, usage_bar

BAR = 12


def render_row(row: QuotaRow) -> Text:
    """A node: its name (indented under its parent), then a line per limited usage, then its counts and caps."""
    indent = "  " * row.depth
    text = Text(indent)
    text.append(row.name, style="bold")
    notes = [f"share {row.share}"] if row.share != 1 else []
    if row.implied:
        notes.append("implied by its flows")
    if notes:
        text.append(f"  ({', '.join(notes)})", style="dim")
    for meter in row.limited:
        text.append(f"\n{indent}  {meter.label:<10}")
        text.append_text(usage_bar(meter, BAR))
        text.append(f" {meter.text}", style="bold bright_red" if meter.full else "")
    counts = [f"{m.label} {m.text}" for m in row.meters if m.limit is None and m.used]
    counts += [f"{name} {n}" for name, n in (("pending", row.pending), ("waiting", row.waiting)) if n]
    if row.journal_bytes:
        counts.append(f"journals {human_bytes(row.journal_bytes)}")
    text.append(f"\n{indent}  " + (" · ".join(counts) or "idle"), style="dim")
    if row.caps:
        text.append(f"\n{indent}  caps " + " · ".join(f"{label} {value}" for label, value in row.caps), style="cyan")
    return text


def render_blocked(flows: list[dict[str, Any]], limit: int = 50) -> Text:
    text = Text(f"Pending and waiting ({len(flows)})", style="bold")
    if not flows:
        text.append("\n  none", style="dim")
    for flow in flows[:limit]:
        text.append("\n  ")
        text.append_text(status_text(str(flow.get("status"))))
        text.append(f" {clip(str(flow.get('flow') or '?'), 18)} #{short_id(flow['id'])} ")
        text.append(flow_why(flow) or "(no reason known yet)", style="yellow")
    if len(flows) > limit:
        text.append(f"\n  … and {len(flows) - limit} more", style="dim")
    return text


class QuotaView(VerticalScroll):
    """Shown from the last ``GET /v1/quota/tree`` and the flows listed; ``text`` is what it shows, for tests."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.body = Static("", id="quota-text")
        self.rows: list[QuotaRow] = []
        self.blocked: list[dict[str, Any]] = []
        self.text = Text("(reading the quota tree…)", style="dim")
        self.error: str | None = None

    def compose(self):  # type: ignore[no-untyped-def]
        yield self.body

    def show(self, rows: list[QuotaRow] | None, index: FlowIndex, error: str | None = None) -> None:
        if rows is not None:
            self.rows = rows
        self.error = error
        self.blocked = blocked_flows(index)
        text = Text()
        if error:
            text.append(f"cannot read the quota tree: {error}\n", style="bright_red")
        if not self.rows and not error:
            text.append("(reading the quota tree…)\n", style="dim")
        for row in self.rows:
            text.append_text(render_row(row))
            text.append("\n")
        text.append_text(render_blocked(self.blocked))
        self.text = text
        self.body.update(text)
