"""The quota tree's rules, with no I/O: node paths, limits, who may do what, the fair claim order.

Every flow belongs to a node (``/``, ``/acme``, ``/acme/ci``). A limit set on a node holds for the
whole subtree below it, so a flow counts against its own node and every ancestor. The Flow DB
queries that apply these rules live in ``grid_local/db/quotas.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

LIMITS: dict[str, str] = {
    "running": "running flows",
    "rate": "flows started per minute",
    "live": "live flows (pending, running, waiting)",
    "journal_entries": "journal entries per flow",
    "journal_bytes": "journal bytes per flow",
    "bundle_bytes": "bundle bytes",
    "eval_budget": "seconds of evaluation budget per flow",
    "resources": "open resources (workspaces, containers)",
    "memory": "MiB of memory per flow",
}
"""Every limit a node may set, with the words a refusal uses for it."""

ROLES = ("viewer", "member", "admin")

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_DEPTH = 16
NODE_PATTERN = r"^/?(?:[A-Za-z0-9][A-Za-z0-9._-]{0,63}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,63}){0,15})?/?$"
"""What a quota node path looks like (for API schemas; ``normalize`` applies the same rule)."""


class QuotaPathError(ValueError):
    """A quota node path that is not one."""


def normalize(path: str) -> str:
    """``acme/ci/`` -> ``/acme/ci``; refuses segments such as ``..`` or names with spaces."""
    parts = [p for p in str(path).strip().split("/") if p]
    if len(parts) > MAX_DEPTH:
        raise QuotaPathError(f"quota node {path!r} is deeper than {MAX_DEPTH} levels")
    for part in parts:
        if not _SEGMENT.match(part):
            raise QuotaPathError(f"quota node {path!r}: {part!r} is not a node name "
                                 "(letters, digits, '.', '_', '-'; at most 64)")
    return "/" + "/".join(parts)


def parent_of(path: str) -> str | None:
    if path == "/":
        return None
    head = path.rsplit("/", 1)[0]
    return head or "/"


def ancestry(path: str) -> list[str]:
    """The node and every ancestor, nearest first: ``/acme/ci`` -> ``/acme/ci, /acme, /``."""
    found = [path]
    while (parent := parent_of(found[-1])) is not None:
        found.append(parent)
    return found


def under(path: str, node: str) -> bool:
    """Whether ``path`` lies in the subtree at ``node`` (itself included)."""
    return node == "/" or path == node or path.startswith(node + "/")


def subtree_sql(column: str = "quota") -> str:
    """A condition on ``column`` for "in the subtree at ?" that an index can serve (two parameters:
    ``subtree_params(node)``): '/' sorts just before '0', so the subtree is one key range."""
    return f"({column} = ? OR ({column} > ? AND {column} < ?))"


def subtree_params(node: str) -> tuple[str, str, str]:
    if node == "/":
        return ("/", "/", "\U0010ffff")
    return (node, node + "/", node + "0")


# -- limits --------------------------------------------------------------------------------------

def parse_rate(text: str) -> int:
    """``30``, ``30/m``, ``30/min`` or ``2/s`` -> flows per minute."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:/\s*(s|sec|m|min|h|hour))?\s*", str(text))
    if not match:
        raise ValueError(f"rate {text!r}: expected N/m (flows per minute), N/s or N/h")
    count, unit = int(match[1]), (match[2] or "m")
    if unit in ("s", "sec"):
        return count * 60
    if unit in ("h", "hour"):
        return max(count // 60, 1) if count else 0
    return count


def describe(node: str, limit: str, used: float, allowed: float) -> str:
    """``quota /acme: 10 of 10 running flows``: how every refusal and every reason names a limit."""
    return f"quota {node}: {used:g} of {allowed:g} {LIMITS[limit]}"


@dataclass(frozen=True)
class Refusal:
    node: str
    limit: str
    used: float
    allowed: float
    retry_after: float | None = None

    @property
    def message(self) -> str:
        return describe(self.node, self.limit, self.used, self.allowed)


def tightest(nodes: Mapping[str, Mapping[str, Any]], path: str, limit: str) -> tuple[float, str] | None:
    """The smallest value of ``limit`` set on ``path`` or an ancestor, and the node that sets it."""
    best: tuple[float, str] | None = None
    for node in ancestry(path):
        value = (nodes.get(node) or {}).get(limit)
        if value is not None and (best is None or value < best[0]):
            best = (value, node)
    return best


# -- roles ---------------------------------------------------------------------------------------

def may_set_limits(role: str, own_node: str, target: str) -> bool:
    """An admin sets limits strictly below its node; its own node is its parent admin's to set."""
    return role == "admin" and target != own_node and under(target, own_node)


def may_start_in(role: str, own_node: str, target: str) -> bool:
    """A member starts flows in its node; an admin in its node or anywhere below it."""
    if role == "member":
        return target == own_node
    return role == "admin" and under(target, own_node)


def may_see(role: str, own_node: str, user: str, flow_quota: str, flow_user: str) -> bool:
    """Admins and viewers see their subtree; a member sees its own flows there."""
    if not under(flow_quota, own_node):
        return False
    return role != "member" or flow_user == user


def may_steer(role: str, own_node: str, user: str, flow_quota: str, flow_user: str) -> bool:
    """Cancel, message, inject: an admin in its subtree, a member its own flows, a viewer nothing."""
    if role == "viewer" or not under(flow_quota, own_node):
        return False
    return role == "admin" or flow_user == user


# -- the fair claim order ------------------------------------------------------------------------

@dataclass(frozen=True)
class Queued:
    id: str
    quota: str
    created: float


def fair_pick(queued: Iterable[Queued], running: Mapping[str, int], running_limits: Mapping[str, int],
              shares: Mapping[str, int], limit: int) -> list[str]:
    """Which queued flows to lease now, at most ``limit``, in order.

    Fair at every level of the tree: each pick walks down from ``/``, and at each node takes the
    child (among those with queued work below them) with the fewest running flows in its subtree
    for its share (``running / share``, ties to the oldest queued flow); flows queued in a node
    itself compete with its children as one more child of share 1. So a flooded ``/acme/ci`` (or
    a hundred flooded nodes below it) cannot delay ``/acme/web``, and all of ``/acme`` weighs as
    much as ``/other``. A subtree whose node is at its ``running`` limit is skipped: its flows stay
    pending and start when their whole ancestry has room.
    """
    heads: dict[str, list[Queued]] = {}
    for flow in sorted(queued, key=lambda f: f.created, reverse=True):
        heads.setdefault(flow.quota, []).append(flow)  # oldest last: pop() takes it
    busy: dict[str, int] = {}  # running flows (and those picked here) in each node's subtree
    own: dict[str, int] = dict(running)  # ... in the node itself
    for quota, count in running.items():
        for node in ancestry(quota):
            busy[node] = busy.get(node, 0) + count
    waiting: dict[str, int] = {}  # queued flows left in each node's subtree
    children: dict[str, set[str]] = {}
    for quota, flows in heads.items():
        chain = ancestry(quota)
        for node in chain:
            waiting[node] = waiting.get(node, 0) + len(flows)
        for child, parent in zip(chain, chain[1:]):
            children.setdefault(parent, set()).add(child)

    def oldest(node: str) -> float:
        found = heads[node][-1].created if heads.get(node) else float("inf")
        return min([found, *(oldest(c) for c in children.get(node, ()) if waiting.get(c))])

    def descend(node: str) -> str | None:
        """The node to take the next flow from, in the subtree at ``node`` (None: none may start)."""
        if node in running_limits and busy.get(node, 0) >= running_limits[node]:
            return None
        options: list[tuple[float, float, str, bool]] = []
        if heads.get(node):
            options.append((own.get(node, 0), heads[node][-1].created, node, True))
        for child in children.get(node, ()):
            if waiting.get(child):
                options.append((busy.get(child, 0) / max(shares.get(child, 1), 1), oldest(child), child, False))
        for _, _, target, itself in sorted(options):
            found = target if itself else descend(target)
            if found is not None:
                return found
        return None

    picked: list[str] = []
    while len(picked) < limit and (source := descend("/")) is not None:
        picked.append(heads[source].pop().id)
        own[source] = own.get(source, 0) + 1
        for node in ancestry(source):
            busy[node] = busy.get(node, 0) + 1
            waiting[node] -= 1
    return picked


def blocking_limit(quota: str, running: Mapping[str, int], running_limits: Mapping[str, int]) -> Refusal | None:
    """The first node of ``quota``'s ancestry (nearest first) whose running limit is reached."""
    for node in ancestry(quota):
        if node not in running_limits:
            continue
        used = sum(n for q, n in running.items() if under(q, node))
        if used >= running_limits[node]:
            return Refusal(node, "running", used, running_limits[node])
    return None
