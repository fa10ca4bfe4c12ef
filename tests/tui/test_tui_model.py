"""The debugger's pure rules: flow trees and filters, journal summaries, replay marks, timeline bars."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from flowmetal_cli.main import app as cli
from tui import model
from tui.model import FlowIndex, Resume
from tui.screens.prompts import parse_delay
from tui.screens.push import deployment_name
from tui.session import EVENT_PAGE, latest_cursor
from tui.widgets.journal import column_widths
from tui.widgets.source import render_source


def flow(fid: str, parent: str | None = None, status: str = "completed", name: str = "f", created: float = 0.0,
         quota: str = "/local/me", finished: float | None = None) -> dict[str, Any]:
    return {"id": fid, "parent": parent, "root": fid if parent is None else "r", "flow": name, "status": status,
            "created": created, "finished": finished, "quota": quota}


def entry(seq: int, worker: str = "w1", requested: float = 0.0, answered: float | None = 1.0,
          result: dict[str, Any] | None = None, kind: str = "sleep") -> dict[str, Any]:
    return {"seq": seq, "kind": kind, "args": {"seconds": 1}, "worker": worker, "requested_at": requested,
            "answered_at": answered, "result": {"ok": True, "value": None} if result is None else result,
            "callsite": f"main.flow:{seq + 10}"}


def test_flow_index_tree_and_filters() -> None:
    index = FlowIndex.of([
        flow("r", name="main.flow", status="running", created=1), flow("a", "r", name="fetch", created=2),
        flow("b", "r", name="save", status="failed", created=3), flow("c", "b", name="retry", created=4),
        flow("x", name="other.flow", created=5, quota="/acme"), flow("orphan", "gone", name="lost", created=0.5),
    ])
    assert [f["id"] for f in index.roots()] == ["x", "r", "orphan"]  # newest first; an orphan is a root here
    assert list(index.by_quota(index.roots())) == ["/acme", "/local/me"]
    assert [f["id"] for f in index.children("r")] == ["a", "b"]
    assert index.descendants("r") == {"a", "b", "c"}
    assert index.ancestors("c") == ["b", "r"]
    assert index.visible("retry") == {"c", "b", "r"}  # a match keeps its ancestors
    assert index.visible(status="failed") == {"b", "r"}
    assert index.visible("acme") == {"x"}
    assert index.visible("nothing") == set()


def test_labels_read_without_colour() -> None:
    running = model.flow_label(flow("r", name="main.flow", status="running", created=100), now=165)
    assert running.plain == "▶ main.flow 1m05s ·1m"
    done = model.flow_label(flow("d", name="x", status="failed", created=0, finished=2.5), now=7200)
    assert done.plain == "✖ x 2.50s ·2h"
    assert {model.status_text(s).plain for s in model.STATUSES} == {"○", "▶", "◷", "✔", "✖", "⊘"}


@pytest.mark.parametrize(("seconds", "text"), [(0.314, "0.31s"), (12.44, "12.4s"), (185, "3m05s"),
                                               (7380, "2h03m"), (90000, "1d01h"), (None, "-")])
def test_human_duration(seconds: float | None, text: str) -> None:
    assert model.human_duration(seconds) == text


def test_summaries_of_requests_and_results() -> None:
    run_args = {"flow": {"name": "greet"}, "args": {"who": "tester"}}
    assert model.summarize_args("run", run_args) == 'greet(who="tester")'
    assert model.summarize_args("sleep", {"seconds": 0.2}) == "0.2s"
    assert model.summarize_args("print", {"text": "hi"}) == '"hi"'
    assert model.summarize_args("http", {"method": "GET", "url": "https://x.test/a"}) == "GET https://x.test/a"
    assert model.summarize_args("wait", {"tasks": [{"flow": "greet", "flow_id": "abcdef123"}], "timeout": 5}) \
        == "greet#abcdef ≤5s"
    assert model.summarize_args("receive", {"inbox": "_stdin", "timeout": None}) == "_stdin"
    assert model.summarize_args("now", {}) == ""
    assert model.summarize_result("sleep", None).plain == "… open"
    assert model.summarize_result("sleep", {"ok": True, "value": None}).plain == "✔"
    assert model.summarize_result("run", {"ok": True, "value": {"flow": "greet", "flow_id": "abc123xyz"}}).plain \
        == "✔ greet#abc123"
    box = {"kind": "docker", "name": "box", "id": "51f5e911b14b", "spec": {"kind": "docker", "image": "busybox"}}
    assert model.summarize_args("open", {"name": "box", "spec": box["spec"]}) == "box docker busybox"
    assert model.summarize_args("exec", {"resource": box, "argv": ["sh", "-c", "make"], "timeout": 60}) \
        == "box: sh -c make"
    assert model.summarize_result("open", {"ok": True, "value": box}).plain == "✔ docker 51f5e911b14b"
    assert model.summarize_result("exec", {"ok": True, "value": {"exit_code": 2, "reopened": "gone"}}).plain \
        == "✖ exit 2 (reopened)"
    failed = model.summarize_result("http", {"ok": False, "error": "interrupted: may or may not\nhave"}, 20)
    assert failed.plain == "✖ interrupted: may …" and "red" in str(failed.style)


def test_resumes_come_from_flow_events() -> None:
    events = [
        {"id": 1, "type": "flow", "flow_id": "f", "status": "running", "worker": "w1", "replay": 0, "at": 1.0},
        {"id": 2, "type": "log", "flow_id": "f", "text": "x"},
        {"id": 3, "type": "flow", "flow_id": "f", "status": "pending", "lease_lost": "w1", "reason": "worker exited"},
        {"id": 4, "type": "flow", "flow_id": "other", "status": "running", "worker": "w3", "replay": 9},
        {"id": 5, "type": "flow", "flow_id": "f", "status": "running", "worker": "w2", "replay": 2, "at": 3.0},
        {"id": 6, "type": "flow", "flow_id": "f", "status": "waiting"},
        {"id": 7, "type": "flow", "flow_id": "f", "status": "running", "worker": "w2", "replay": 5, "at": 9.0},
    ]
    killed, woken = model.resumes_from_events(reversed(events), "f")
    assert killed == Resume(3, 2, "w2", "w1", "worker exited", 3.0)
    assert killed.describe() == "⚡ lease of w1 lost (worker exited) · ↻ resumed on w2, replayed 2 entries"
    assert woken == Resume(6, 5, "w2", None, None, 9.0)


def test_journal_rows_place_each_resume_before_the_first_entry_it_ran() -> None:
    journal = [entry(1), entry(2), entry(3, "w2"), entry(4, "w2")]
    resumes = model.resumes_from_journal(journal)
    assert resumes == [Resume(3, 2, "w2", reason="worker changed")]
    rows = model.journal_rows(journal, resumes + [Resume(9, 8, "w3")])
    assert [r["seq"] if isinstance(r, dict) else "R" for r in rows] == [1, 2, "R", 3, 4, "R"]


def test_first_error_and_callsites() -> None:
    journal = [entry(1), entry(2, result={"ok": False, "error": "boom"}), entry(3, result={"ok": False})]
    assert model.first_error(journal) == 1
    assert model.first_error(journal[:1]) is None
    child_failed = entry(1, kind="wait", result={"ok": True, "value": [{"ok": True}, {"ok": False, "error": "x"}]})
    assert model.first_error([entry(0), child_failed]) == 1
    assert model.callsite_of(journal[0]) == ("main.flow", 11)
    assert model.callsite_of({"callsite": "lib/x.star:7"}) == ("lib/x.star", 7)
    assert model.callsite_of({"callsite": ""}) is None


def test_timeline_bar_shows_start_and_length() -> None:
    assert model.timeline_bar(entry(1, requested=0, answered=5), 0, 10, 10, now=10).plain == "█████·····"
    assert model.timeline_bar(entry(1, requested=5, answered=5.01), 0, 10, 10, now=10).plain == "·····█····"
    open_bar = model.timeline_bar(entry(1, requested=8, answered=None), 0, 10, 10, now=10)
    assert open_bar.plain == "········░░"
    assert model.flow_span(flow("f", created=2, finished=None), [entry(1, requested=3, answered=4)], now=9) == (2, 9)


def test_journal_columns_share_the_width() -> None:
    assert column_widths(0) == (16, 12, 10)  # minimums: the table scrolls sideways
    request, result, bar = column_widths(140)
    assert request > 16 and result > 12 and bar > 10


def test_source_marks_the_line() -> None:
    text = render_source("a = 1\nb = 2\nc = 3\n", 2)
    lines = text.plain.splitlines()
    assert [line.rstrip() for line in lines] == [" 1 a = 1", "▶2 b = 2", " 3 c = 3"]


def test_dialog_parsing() -> None:
    assert parse_delay("5") == 5.0 and parse_delay(" 0.5s ") == 0.5
    assert parse_delay("0") is None and parse_delay("abc") is None and parse_delay("99999") is None
    assert deployment_name("nightly.flow") == "nightly"
    assert deployment_name("lib/my job.flow") == "my-job"


class PagedEvents:
    """A stand-in for the events call alone: ids 1..last, pages of EVENT_PAGE."""

    def __init__(self, last: int) -> None:
        self.last = last
        self.calls = 0

    def events(self, after: int = 0, **_: Any) -> dict[str, Any]:
        self.calls += 1
        ids = list(range(after + 1, min(after + EVENT_PAGE, self.last) + 1))
        return {"events": [{"id": i} for i in ids], "cursor": ids[-1] if ids else after}


@pytest.mark.parametrize("last", [0, 5, EVENT_PAGE, EVENT_PAGE + 1, 3 * EVENT_PAGE, 123_457])
def test_latest_cursor_finds_the_newest_event_without_reading_all(last: int) -> None:
    source = PagedEvents(last)
    assert latest_cursor(source) == last  # type: ignore[arg-type]
    assert source.calls <= 4 + 2 * (last + 2).bit_length()


def test_the_cli_starts_without_textual() -> None:
    code = "import sys, flowmetal_cli.main; print('textual' in sys.modules, 'tui' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_tui_command_help_and_usage_errors(tmp_path: Any) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["tui", "--help"])
    assert result.exit_code == 0 and "interactive debugger" in result.output
    missing = runner.invoke(cli, ["tui", str(tmp_path / "missing.flow")])
    assert missing.exit_code == 2


QUOTA_TREE = [  # GET /v1/quota/tree at /local/me, as a grid answers it
    {"path": "/local/me", "limits": {"running": 4, "rate": 60}, "share": 1, "open": True,
     "usage": {"running": 3, "pending": 5, "waiting": 1, "live": 9, "rate": 60, "journal_bytes": 1536, "resources": 0}},
    {"path": "/local/me/ci", "limits": {"running": 2, "live": 0, "journal_bytes": 4096, "eval_budget": 2.5, "memory": 256},
     "share": 3, "open": True,
     "usage": {"running": 2, "pending": 5, "waiting": 0, "live": 7, "rate": 7, "journal_bytes": 1024, "resources": 0}},
    {"path": "/local/me/ci/nightly", "limits": {}, "share": 1, "open": True, "implied": True,
     "usage": {"running": 0, "pending": 0, "waiting": 0, "live": 0, "rate": 0, "journal_bytes": 0, "resources": 0}},
]


def test_quota_rows_meters_and_bars() -> None:
    top, ci, nightly = model.quota_rows(QUOTA_TREE)
    assert [(r.name, r.depth) for r in (top, ci, nightly)] == [("/local/me", 0), ("ci", 1), ("nightly", 2)]
    assert [(m.name, m.text, m.fraction) for m in top.limited] == [("running", "3/4", 0.75), ("rate", "60/60", 1.0)]
    assert [m.full for m in top.limited] == [False, True]
    assert (top.pending, top.waiting, top.journal_bytes) == (5, 1, 1536)
    live = next(m for m in ci.meters if m.name == "live")
    assert (live.fraction, live.full) == (1.0, True)  # a limit of 0 with flows live is full
    assert ci.caps == [("journal/flow", "4.0 KiB"), ("eval/flow", "2.5s"), ("memory/flow", "256 MiB")] and ci.share == 3
    assert nightly.limited == [] and nightly.implied
    assert model.quota_rows([]) == []

    full = model.usage_bar(top.limited[1], 10)
    assert full.plain == "█" * 10 and full.style == "bright_red"
    three_quarters = model.usage_bar(top.limited[0], 8)
    assert three_quarters.plain == "██████░░" and three_quarters.style == "yellow"
    assert model.usage_bar(model.Meter("running", "running", 1, 10), 10).plain == "█" + "░" * 9  # some use shows
    assert model.usage_bar(model.Meter("running", "running", 0, 10), 4).plain == "░░░░"
    assert model.usage_bar(model.Meter("running", "running", 3, None), 4).plain == "    "  # no limit, no bar
    assert model.Meter("rate", "rate/min", 120, 60).fraction == 1.0  # over a lowered limit: clipped


def test_pending_and_waiting_flows_say_why() -> None:
    reason = "waiting for quota /local/me/ci: 2 of 2 running flows"
    index = FlowIndex.of([
        {**flow("p", status="pending", created=3, name="held"), "why": reason},
        {**flow("w", status="waiting", created=1), "why": "waiting for a message on inbox go"},
        {**flow("r", status="running", created=2), "why": "running on worker w1"},
        flow("d", created=0),
    ])
    assert [f["id"] for f in model.blocked_flows(index)] == ["w", "p"]
    assert model.flow_why(index.flows["p"]) == reason and model.flow_why(index.flows["r"]) is None
    label = model.flow_label(index.flows["p"], now=10)
    assert label.plain.endswith(f"·7s {reason}")
    assert "running on worker" not in model.flow_label(index.flows["r"], now=10).plain


def test_the_quotas_tab_text() -> None:
    from tui.widgets.quotas import render_blocked, render_row

    top, ci, _ = model.quota_rows(QUOTA_TREE)
    assert render_row(ci).plain.splitlines() == [
        "  ci  (share 3)",
        "    running   ████████████ 2/2",
        "    live      ████████████ 7/0",
        "    rate/min 7 · pending 5 · journals 1.0 KiB",
        "    caps journal/flow 4.0 KiB · eval/flow 2.5s · memory/flow 256 MiB",
    ]
    blocked = render_blocked([{**flow("abcdef123", status="pending", name="held"), "why": "waiting for a worker slot"}])
    assert blocked.plain.splitlines() == ["Pending and waiting (1)", "  ○ held #abcdef waiting for a worker slot"]
    assert render_blocked([]).plain.splitlines() == ["Pending and waiting (0)", "  none"]
    assert render_row(model.quota_rows(QUOTA_TREE)[2]).plain.splitlines() == [
        "    nightly  (implied by its flows)", "      idle"]
