"""The step bar: where replay stepping is (entry n of m), its request and result, and step buttons."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Static

from tui.model import Resume, summarize_args, summarize_result


def step_text(row: dict[str, Any] | Resume | None, position: int | None, total: int) -> Text:
    if row is None:
        return Text("no entry", style="dim")
    if isinstance(row, Resume):
        return Text(row.describe(), style="yellow", no_wrap=True, overflow="ellipsis")
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"step {position}/{total} ", style="bold")
    text.append(f"{row['kind']}({summarize_args(row['kind'], row.get('args'), 30)})")
    text.append(" → ")
    text.append_text(summarize_result(row["kind"], row.get("result"), 30))
    if row.get("callsite"):
        text.append(f" @{row['callsite']}", style="dim")
    return text


class StepBar(Horizontal):
    text = Text()
    """What the bar says now (tests read it)."""

    def compose(self) -> ComposeResult:
        self.label = Static("", id="step-text")
        yield self.label
        for label, name, tip in (("◀", "step-back", "previous entry (p)"), ("▶", "step-next", "next entry (n)"),
                                 ("✖err", "step-error", "first failed entry (e)")):
            button = Button(label, id=name, compact=True, tooltip=tip)
            button.can_focus = False  # a click steps without taking the keyboard from the journal or tree
            yield button

    def show(self, row: dict[str, Any] | Resume | None, position: int | None, total: int) -> None:
        self.text = step_text(row, position, total)
        self.label.update(self.text)
