"""What the debugger shows, computed from grid records: flow trees, journal rows, replay marks, bars.

Pure functions and plain data over the JSON the Client API returns; no Textual and no I/O, so
every rule here is tested without a terminal. Times come in as arguments (the app's injectable
clock), never from ``time.time()``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from flowmetal_cli.console import human_bytes

STATUSES = ("pending", "running", "waiting", "completed", "failed", "cancelled")
FINISHED = ("completed", "failed", "cancelled")

# A symbol per status, so the tree reads without colour too.
STATUS_SYMBOL = {
    "pending": "○", "running": "▶", "waiting": "◷", "completed": "✔", "failed": "✖", "cancelled": "⊘",
}
STATUS_COLOUR = {
    "pending": "grey62", "running": "bright_cyan", "waiting": "yellow", "completed": "green",
    "failed": "bright_red", "cancelled": "magenta",
}


def status_text(status: str, with_word: bool = False) -> Text:
    symbol = STATUS_SYMBOL.get(status, "?")
    return Text(f"{symbol} {status}" if with_word else symbol, style=STATUS_COLOUR.get(status, ""))


def short_id(flow_id: str | None) -> str:
    return (flow_id or "")[:6]


def human_duration(seconds: float | None) -> str:
    """A compact duration: 0.31s, 12.4s, 3m05s, 2h03m, 4d02h."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def human_age(seconds: float) -> str:
    """How long ago, in the largest whole unit: 5s, 3m, 2h, 4d."""
    whole = int(max(seconds, 0.0))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def utc_time(at: float | None) -> str:
    """An absolute time, in UTC so it reads the same on every machine."""
    if at is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"


def offset(at: float | None, start: float) -> str:
    """A time as an offset from the start of its flow: +0.31s."""
    return "…" if at is None else "+" + human_duration(at - start)


def _stamp(value: Any, default: float) -> float:
    return default if value is None else float(value)


def flow_duration(flow: dict[str, Any], now: float) -> float:
    end = _stamp(flow.get("finished"), now)
    return end - _stamp(flow.get("created"), end)


def compact_json(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return clip(text, limit)


def clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


# -- flows --------------------------------------------------------------------------------------


@dataclass
class FlowIndex:
    """The flows the grid listed, by id, with their children, filterable by status and text."""

    flows: dict[str, dict[str, Any]] = field(default_factory=dict)
    _children: dict[str, list[dict[str, Any]]] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, records: Iterable[dict[str, Any]]) -> "FlowIndex":
        return cls({record["id"]: record for record in records})

    def get(self, flow_id: str | None) -> dict[str, Any] | None:
        return self.flows.get(flow_id) if flow_id else None

    def add(self, record: dict[str, Any]) -> None:
        """Insert or refresh one flow's record."""
        self.flows[record["id"]] = record
        self._children = None

    def children(self, flow_id: str) -> list[dict[str, Any]]:
        if self._children is None:  # one pass over the flows, not one per parent
            self._children = {}
            for flow in sorted(self.flows.values(), key=lambda f: (f.get("created") or 0, f["id"])):
                if flow.get("parent"):
                    self._children.setdefault(flow["parent"], []).append(flow)
        return list(self._children.get(flow_id, []))

    def roots(self) -> list[dict[str, Any]]:
        """Flows without a listed parent, newest first (a child whose parent fell off the list is a root here)."""
        found = [f for f in self.flows.values() if not f.get("parent") or f["parent"] not in self.flows]
        return sorted(found, key=lambda f: (-(f.get("created") or 0), f["id"]))

    def by_quota(self, roots: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for flow in roots:
            groups.setdefault(str(flow.get("quota") or "/"), []).append(flow)
        return dict(sorted(groups.items()))

    def descendants(self, flow_id: str) -> set[str]:
        found: set[str] = set()
        pending = [flow_id]
        while pending:
            current = pending.pop()
            for child in self.children(current):
                if child["id"] not in found:
                    found.add(child["id"])
                    pending.append(child["id"])
        return found

    def ancestors(self, flow_id: str) -> list[str]:
        chain: list[str] = []
        current = self.flows.get(flow_id)
        while current and current.get("parent") and current["parent"] in self.flows and current["parent"] not in chain:
            chain.append(current["parent"])
            current = self.flows[current["parent"]]
        return chain

    def visible(self, text: str = "", status: str | None = None) -> set[str]:
        """Flows matching the filter, and their ancestors (so each match keeps its place in the tree)."""
        needle = text.strip().lower()
        shown: set[str] = set()
        for flow in self.flows.values():
            if status and flow.get("status") != status:
                continue
            if needle and not any(needle in str(flow.get(key) or "").lower() for key in ("flow", "id", "quota", "status")):
                continue
            shown.add(flow["id"])
            shown.update(self.ancestors(flow["id"]))
        return shown


def flow_label(flow: dict[str, Any], now: float) -> Text:
    """One tree line: status symbol, name, duration (so far, in italics, while it runs) and ``·age``."""
    status = str(flow.get("status"))
    label = status_text(status)
    label.append(f" {clip(str(flow.get('flow') or '?'), 18)}")
    label.append(f" {human_duration(flow_duration(flow, now))}", style="" if status in FINISHED else "italic")
    created = _stamp(flow.get("created"), now)
    label.append(f" ·{human_age(now - created)}", style="dim")
    why = flow_why(flow)
    if why:
        label.append(f" {why}", style="yellow")
    return label


# -- journal ------------------------------------------------------------------------------------


def summarize_args(kind: str, args: Any, limit: int = 40) -> str:
    """A request's arguments in a few words, as a person would say them."""
    if not isinstance(args, dict):
        return compact_json(args, limit)
    if kind == "print":
        return clip(json.dumps(str(args.get("text", "")), ensure_ascii=False), limit)
    if kind == "sleep":
        return f"{args.get('seconds')}s"
    if kind == "run":
        spec = args.get("flow") or {}
        call = ", ".join(f"{k}={compact_json(v, 16)}" for k, v in sorted((args.get("args") or {}).items()))
        return clip(f"{spec.get('name', '?')}({call})", limit)
    if kind == "wait":
        tasks = args.get("tasks") or []
        names = ", ".join(
            f"{t.get('flow', '?')}#{short_id(t.get('flow_id'))}" if isinstance(t, dict) else compact_json(t, 12)
            for t in tasks
        )
        timeout = args.get("timeout")
        return clip(names + (f" ≤{timeout}s" if timeout is not None else ""), limit)
    if kind == "http":
        return clip(f"{args.get('method', 'GET')} {args.get('url', '')}", limit)
    if kind == "receive":
        timeout = args.get("timeout")
        return clip(str(args.get("inbox", "_stdin")) + (f" ≤{timeout}s" if timeout is not None else ""), limit)
    if kind == "send":
        return clip(f"→{short_id(args.get('flow_id'))} {compact_json(args.get('value'), limit)}", limit)
    if kind == "open":
        wanted: dict[str, Any] = args["spec"] if isinstance(args.get("spec"), dict) else {}
        return clip(" ".join(str(part) for part in (args.get("name", "?"), wanted.get("kind", "?"), wanted.get("image"))
                             if part), limit)
    if kind == "exec":
        resource: dict[str, Any] = args["resource"] if isinstance(args.get("resource"), dict) else {}
        return clip(f"{resource.get('name', '?')}: " + " ".join(str(a) for a in args.get("argv") or []), limit)
    if not args:
        return ""
    return compact_json(args, limit)


def summarize_result(kind: str, result: dict[str, Any] | None, limit: int = 32) -> Text:
    """A result in a few words: ``…`` while open, ``✖ message`` for an error."""
    if result is None:
        return Text("… open", style="yellow")
    if not result.get("ok"):
        message = str(result.get("error") or "error").splitlines()[0] if result.get("error") else "error"
        return Text(clip(f"✖ {message}", limit), style="bright_red")
    value = result.get("value")
    if kind == "run" and isinstance(value, dict):
        return Text(clip(f"✔ {value.get('flow', '?')}#{short_id(value.get('flow_id'))}", limit), style="green")
    if kind == "wait" and isinstance(value, list):
        parts = [("ok " + compact_json(v.get("value"), 12)) if isinstance(v, dict) and v.get("ok")
                 else "err" for v in value]
        failed = "err" in parts
        return Text(clip(("✖ " if failed else "✔ ") + ", ".join(parts), limit), style="bright_red" if failed else "green")
    if value is None:
        return Text("✔", style="green")
    if kind == "open" and isinstance(value, dict):
        opened = value.get("id") if value.get("kind") == "docker" else value.get("path")
        return Text(clip(f"✔ {value.get('kind', '?')} {opened or ''}".rstrip(), limit), style="green")
    if kind == "exec" and isinstance(value, dict) and "exit_code" in value:
        code = value["exit_code"]
        text = f"{'✔' if code == 0 else '✖'} exit {code}" + (" (reopened)" if value.get("reopened") else "")
        return Text(clip(text, limit), style="green" if code == 0 else "yellow")
    return Text(clip("✔ " + compact_json(value, limit), limit), style="green")


def entry_failed(entry: dict[str, Any]) -> bool:
    """An error result, or a wait that returned a failed child's ``Err``."""
    result = entry.get("result")
    if not isinstance(result, dict):
        return False
    if not result.get("ok"):
        return True
    value = result.get("value")
    return entry.get("kind") == "wait" and isinstance(value, list) and any(
        isinstance(item, dict) and item.get("ok") is False for item in value)


def first_error(journal: list[dict[str, Any]]) -> int | None:
    """The position of the first entry whose result is an error."""
    for index, entry in enumerate(journal):
        if entry_failed(entry):
            return index
    return None


def timeline_bar(entry: dict[str, Any], start: float, end: float, width: int, now: float) -> Text:
    """Where the entry sits in its flow's life: ``·`` before and after, ``█`` while it ran (``░`` still open)."""
    span = max(end - start, 1e-6)
    requested = _stamp(entry.get("requested_at"), start)
    answered = entry.get("answered_at")
    stop = float(answered) if answered is not None else max(now, requested)
    first = min(max(int((requested - start) / span * width), 0), width - 1)
    last = min(max(math.ceil((stop - start) / span * width), first + 1), width)
    fill, style = "█", "green"
    if answered is None:
        fill, style = "░", "yellow"
    elif entry_failed(entry):
        style = "bright_red"
    bar = Text("·" * first, style="grey35")
    bar.append(fill * (last - first), style=style)
    bar.append("·" * (width - last), style="grey35")
    return bar


def flow_span(flow: dict[str, Any], journal: list[dict[str, Any]], now: float) -> tuple[float, float]:
    start = _stamp(flow.get("created"), now)
    stamps = [start]
    for entry in journal:
        stamps.extend(float(entry[k]) for k in ("requested_at", "answered_at") if entry.get(k) is not None)
    end = _stamp(flow.get("finished"), max(now, *stamps))
    return start, max(end, *stamps)


@dataclass(frozen=True)
class Resume:
    """A flow resumed on a worker after replaying ``replayed`` journal entries."""

    before_seq: int
    replayed: int
    worker: str | None
    lost_by: str | None = None
    reason: str | None = None
    at: float | None = None

    def describe(self) -> str:
        where = f"on {self.worker}" if self.worker else ""
        text = f"↻ resumed {where}, replayed {self.replayed} entr{'y' if self.replayed == 1 else 'ies'}"
        if self.lost_by:
            text = f"⚡ lease of {self.lost_by} lost ({self.reason or 'gone'}) · " + text
        return text


def resumes_from_events(events: Iterable[dict[str, Any]], flow_id: str) -> list[Resume]:
    """Resumptions from the flow's ``flow`` events: a ``running`` event with ``replay: N`` after a first run."""
    found: list[Resume] = []
    lost: tuple[str, str | None] | None = None
    for event in sorted(events, key=lambda e: e.get("id", 0)):
        if event.get("type") != "flow" or event.get("flow_id") != flow_id:
            continue
        if event.get("lease_lost"):
            lost = (str(event["lease_lost"]), event.get("reason"))
        elif event.get("status") == "running":
            replayed = int(event.get("replay") or 0)
            if replayed or lost:
                found.append(Resume(replayed + 1, replayed, event.get("worker"),
                                    lost[0] if lost else None, lost[1] if lost else None, event.get("at")))
            lost = None
    return found


def resumes_from_journal(journal: list[dict[str, Any]]) -> list[Resume]:
    """Without events: a change of worker between two entries means the flow resumed elsewhere."""
    found: list[Resume] = []
    for previous, entry in zip(journal, journal[1:]):
        if entry.get("worker") and previous.get("worker") and entry["worker"] != previous["worker"]:
            found.append(Resume(entry["seq"], entry["seq"] - 1, entry["worker"], reason="worker changed"))
    return found


def journal_rows(journal: list[dict[str, Any]], resumes: list[Resume]) -> list[dict[str, Any] | Resume]:
    """The timeline in order: entries, with each resumption placed before the first entry it ran."""
    rows: list[dict[str, Any] | Resume] = []
    pending = sorted(resumes, key=lambda r: r.before_seq)
    for entry in journal:
        while pending and pending[0].before_seq <= entry["seq"]:
            rows.append(pending.pop(0))
        rows.append(entry)
    rows.extend(pending)
    return rows


def callsite_of(entry: dict[str, Any] | None) -> tuple[str, int] | None:
    """``("lib/x.star", 12)`` from an entry's ``file:line`` call site."""
    site = str((entry or {}).get("callsite") or "")
    path, _, line = site.rpartition(":")
    if not path or not line.isdigit():
        return None
    return path, int(line)


def process_label(process: dict[str, Any]) -> str:
    return f"{process.get('role')} {process.get('name')} (pid {process.get('pid')})"


def flow_why(flow: dict[str, Any]) -> str | None:
    """The grid's one line on why a pending or waiting flow is not running (None for the others)."""
    why = flow.get("why")
    return str(why) if why and flow.get("status") in ("pending", "waiting") else None


# -- the quota tree -----------------------------------------------------------------------------

METERS = (("running", "running"), ("live", "live"), ("rate", "rate/min"), ("resources", "resources"))
"""The usages a node may limit, with their labels: each is drawn as a bar against its limit."""
CAPS = (("journal_entries", "entries/flow"), ("journal_bytes", "journal/flow"), ("bundle_bytes", "bundle"),
        ("eval_budget", "eval/flow"), ("memory", "memory/flow"))
"""The per-flow caps a node may set: shown as values, since there is no subtree usage to bar them against."""


def cap_text(limit: str, value: Any) -> str:
    if limit in ("journal_bytes", "bundle_bytes"):
        return human_bytes(float(value))
    if limit == "eval_budget":
        return f"{value:g}s"
    if limit == "memory":
        return f"{value:g} MiB"
    return f"{value:g}"


@dataclass(frozen=True)
class Meter:
    """One usage of a node: ``used`` against ``limit`` (None: not limited), and how full it is."""

    name: str
    label: str
    used: float
    limit: float | None

    @property
    def fraction(self) -> float | None:
        """0..1 (a limit of 0 with anything used is full); None without a limit."""
        if self.limit is None:
            return None
        if self.limit <= 0:
            return 1.0 if self.used > 0 else 0.0
        return min(max(self.used / self.limit, 0.0), 1.0)

    @property
    def text(self) -> str:
        return f"{self.used:g}/{self.limit:g}" if self.limit is not None else f"{self.used:g}"

    @property
    def full(self) -> bool:
        return self.limit is not None and self.used >= self.limit


@dataclass(frozen=True)
class QuotaRow:
    """A node of the quota tree as the Quotas tab draws it."""

    path: str
    depth: int
    name: str
    meters: list[Meter]
    pending: int
    waiting: int
    journal_bytes: int
    caps: list[tuple[str, str]]
    share: int
    implied: bool = False

    @property
    def limited(self) -> list[Meter]:
        return [m for m in self.meters if m.limit is not None]


def quota_rows(nodes: list[dict[str, Any]]) -> list[QuotaRow]:
    """``GET /v1/quota/tree``'s nodes (parents before children) as rows, indented under the first."""
    if not nodes:
        return []
    base = _depth(str(nodes[0]["path"]))
    rows = []
    for node in nodes:
        path = str(node["path"])
        depth = _depth(path) - base
        usage, limits = node.get("usage") or {}, node.get("limits") or {}
        meters = [Meter(key, label, float(usage.get(key, 0)), None if limits.get(key) is None else float(limits[key]))
                  for key, label in METERS]
        caps = [(label, cap_text(key, limits[key])) for key, label in CAPS if limits.get(key) is not None]
        rows.append(QuotaRow(path, depth, path if depth == 0 else path.rsplit("/", 1)[1], meters,
                             int(usage.get("pending", 0)), int(usage.get("waiting", 0)),
                             int(usage.get("journal_bytes", 0)), caps, int(node.get("share", 1)),
                             bool(node.get("implied"))))
    return rows


def _depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def usage_bar(meter: Meter, width: int = 12) -> Text:
    """``███████░░░░░``: how full a limited usage is (green, yellow past 3/4, red when full)."""
    fraction = meter.fraction
    if fraction is None:
        return Text(" " * width)
    filled = min(width, math.ceil(fraction * width)) if fraction > 0 else 0
    style = "bright_red" if meter.full else "yellow" if fraction >= 0.75 else "green"
    bar = Text("█" * filled, style=style)
    bar.append("░" * (width - filled), style="grey35")
    return bar


def blocked_flows(index: FlowIndex) -> list[dict[str, Any]]:
    """The pending and waiting flows, oldest first: the Quotas tab lists each with its reason."""
    found = [f for f in index.flows.values() if f.get("status") in ("pending", "waiting")]
    return sorted(found, key=lambda f: (f.get("created") or 0, f["id"]))
