"""The detail pane: the selected flow's record and the selected journal entry in full."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from tui.model import Resume, flow_duration, human_duration, status_text, utc_time


def _pretty(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


def describe_flow(flow: dict[str, Any], now: float) -> Text:
    text = Text()
    text.append(f"{flow.get('flow')} ", style="bold")
    text.append(f"#{flow['id']} ")
    text.append_text(status_text(str(flow.get("status")), with_word=True))
    text.append(f"\nquota {flow.get('quota')} · user {flow.get('username', '-')} · resumes {flow.get('resumes', 0)}")
    text.append(f"\nbundle {flow.get('bundle')}", style="dim")
    text.append(f"\ncreated {utc_time(flow.get('created'))} · took {human_duration(flow_duration(flow, now))}")
    if flow.get("worker"):
        text.append(f" · held by {flow['worker']}")
    if flow.get("parent"):
        text.append(f"\nparent #{flow['parent']}")
    if flow.get("why") and flow.get("status") not in ("completed", "failed", "cancelled"):
        text.append(f"\nwhy {flow['why']}", style="yellow")  # the grid's one line: quota, child, timer, inbox, slot
    text.append(f"\nargs {_pretty(flow.get('args') or {})}")
    if flow.get("status") == "completed":
        text.append(f"\nresult {_pretty(flow.get('result'))}", style="green")
    error = flow.get("error")
    if error:
        text.append(f"\nerror {error.get('message', '')}", style="bright_red")
        if error.get("traceback"):
            text.append("\n" + str(error["traceback"]).rstrip(), style="red")
    return text


def describe_row(row: dict[str, Any] | Resume | None) -> Text:
    if row is None:
        return Text("(no journal entry selected)", style="dim")
    if isinstance(row, Resume):
        text = Text(row.describe(), style="yellow")
        text.append(f"\nat {utc_time(row.at)}" if row.at else "")
        return text
    text = Text()
    text.append(f"entry {row['seq']} · {row['kind']}", style="bold")
    text.append(f" · {row.get('callsite') or 'no call site'} · {row.get('worker') or '-'}")
    requested, answered = row.get("requested_at"), row.get("answered_at")
    text.append(f"\nrequested {utc_time(requested)}")
    if answered is not None and requested is not None:
        text.append(f"\nanswered  {utc_time(answered)} (after {human_duration(answered - requested)})")
    else:
        text.append("\nanswered  - (still open)", style="yellow")
    text.append(f"\nrequest {_pretty(row.get('args'))}")
    result = row.get("result")
    if result is None:
        text.append("\nresult … (no result yet)", style="yellow")
    elif result.get("ok"):
        text.append(f"\nresult ok {_pretty(result.get('value'))}", style="green")
    else:
        text.append(f"\nresult error {result.get('error')}", style="bright_red")
        if result.get("traceback"):
            text.append("\n" + str(result["traceback"]).rstrip(), style="red")
    return text


class DetailView(VerticalScroll):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.text = Static("", id="detail-text")

    def compose(self):  # type: ignore[no-untyped-def]
        yield self.text

    def show(self, flow: dict[str, Any] | None, row: dict[str, Any] | Resume | None, now: float) -> None:
        parts: list[RenderableType] = []
        if flow is None:
            parts.append(Text("(no flow selected)", style="dim"))
        else:
            parts += [describe_row(row), Text(""), describe_flow(flow, now)]
        self.text.update(Group(*parts))
