"""Quota nodes in the Flow DB: their limits, admission of starts, the fair claim order, usage.

The rules themselves (paths, roles, the fair pick) are pure functions in ``grid_local/quota_tree.py``;
this module reads and writes what they need. A limit on a node holds for its whole subtree:

- hard limits (``live``, ``rate``, ``bundle_bytes``) are checked inside the start's transaction,
  so a refused start (``QuotaError``) writes nothing;
- ``running`` is applied by the claim: a flow whose ancestry is at its limit stays ``pending``;
- ``journal_entries`` and ``journal_bytes`` are stamped on each flow when it starts (its
  ``journal_cap``/``bytes_cap``) and refused by the journal append;
- ``eval_budget`` and ``memory`` cap what a bundle's ``[limits]`` may ask for (``eval_budget``,
  ``memory_mib``; handed to the worker with the claim, which applies them);
- ``resources`` bounds the open resources of the subtree: an ``open`` that would pass it is answered
  with the refusal in its append's transaction (``open_refusal``), so two opens cannot both take
  the last one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from grid_local import quota_tree as qt
from grid_local.db.engine import Row, Engine
from grid_local.errors import QuotaError

LIVE = "('pending', 'running', 'waiting')"
HARD = ("live", "rate", "bundle_bytes")
NODE_FIELDS = (*qt.LIMITS, "share", "open")
OPEN_RESOURCES = (
    # A resource is open from its `open` request (answered or still with the connector) until its flow
    # ends (the resources connector closes it then); a refused or failed open holds nothing.
    "FROM journal j JOIN flows f ON f.id = j.flow_id WHERE j.kind = 'open' AND f.status IN " + LIVE +
    " AND (j.result IS NULL OR j.result LIKE '{\"ok\":true%')"
)
RUNNING_NOW = (
    # Running flows, without those parked on an open `wait` for their children: a parent waiting on
    # its children does not do work, and counting it would let a fan-out under a limit starve itself.
    "SELECT quota, COUNT(*) AS n FROM flows f WHERE status = 'running' AND NOT EXISTS "
    "(SELECT 1 FROM journal j WHERE j.flow_id = f.id AND j.kind = 'wait' AND j.result IS NULL) GROUP BY quota"
)


@dataclass(frozen=True)
class Caps:
    """What a starting flow carries of its ancestry's limits (None: no limit)."""

    journal_entries: int | None = None
    journal_bytes: int | None = None


def node_json(row: Row | dict[str, Any]) -> dict[str, Any]:
    return {"path": row["path"], "limits": {k: row[k] for k in qt.LIMITS if row[k] is not None},
            "share": row["share"], "open": bool(row["open"])}


class Quotas:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.running_limited = True
        """Whether some node limits running flows, as the last claim saw it: then a flow that stops
        running frees room a pending flow may be waiting for, and wakes the claimers."""

    # -- nodes ----------------------------------------------------------------------------------

    async def nodes(self, paths: list[str] | None = None) -> dict[str, dict[str, Any]]:
        if paths is None:
            rows = await self.engine.all("SELECT * FROM quota_nodes")
        else:
            rows = await self.engine.all(
                f"SELECT * FROM quota_nodes WHERE path IN ({','.join('?' * len(paths))})", *paths)
        return {r["path"]: dict(r) for r in rows}

    async def get_node(self, path: str) -> dict[str, Any] | None:
        row = await self.engine.one("SELECT * FROM quota_nodes WHERE path = ?", path)
        return None if row is None else node_json(row)

    async def set_node(self, path: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Create the node (and missing ancestors) if needed and apply ``changes`` (a limit set to
        None is removed). Returns the node."""
        unknown = set(changes) - set(NODE_FIELDS)
        if unknown:
            raise ValueError(f"unknown quota settings: {', '.join(sorted(unknown))}")
        now = time.time()
        async with self.engine.transaction():
            await self._create_missing(path, now, explicit=True)
            if changes:
                sets = ", ".join(f"{k} = ?" for k in changes)
                await self.engine.execute(f"UPDATE quota_nodes SET {sets}, updated = ? WHERE path = ?",
                                          *[int(v) if k == "open" else v for k, v in changes.items()], now, path)
            self.engine.note("runnable")  # a raised running limit may let pending flows start
        node = await self.get_node(path)
        assert node is not None
        return node

    async def _create_missing(self, path: str, now: float, explicit: bool) -> None:
        """Create ``path`` and its missing ancestors (inside the caller's transaction). On first use
        (not ``explicit``) the nearest existing ancestor must be open to children."""
        chain = qt.ancestry(path)
        existing = await self.nodes(chain)
        missing = [p for p in chain if p not in existing]
        if not missing:
            return
        if not explicit:
            nearest = next(p for p in chain if p in existing)
            if not existing[nearest]["open"]:
                raise QuotaError(f"quota node {path} does not exist, and {nearest} does not create nodes on "
                                 f"first use (an admin of {nearest} creates it with `flowmetal quota set`)", 403)
        for node in reversed(missing):
            await self.engine.execute("INSERT INTO quota_nodes (path, created, updated) VALUES (?, ?, ?) "
                                      "ON CONFLICT DO NOTHING",
                                      node, now, now)

    # -- admission of a start ---------------------------------------------------------------------

    async def plan_start(self, quota: str) -> Caps | None:
        """The caps a flow starting in ``quota`` carries when its start needs no check (its nodes all
        exist and none of them sets a hard limit), else None: then ``admit`` inside a transaction."""
        chain = qt.ancestry(quota)
        nodes = await self.nodes(chain)
        if len(nodes) < len(chain) or any(nodes[p][k] is not None for p in chain for k in HARD):
            return None
        return self._caps(nodes, quota)

    def _caps(self, nodes: dict[str, dict[str, Any]], quota: str) -> Caps:
        entries = qt.tightest(nodes, quota, "journal_entries")
        size = qt.tightest(nodes, quota, "journal_bytes")
        return Caps(None if entries is None else int(entries[0]), None if size is None else int(size[0]))

    async def admit(self, quota: str, bundle: str | None) -> Caps:
        """Check a start against every ancestor's hard limits, inside the start's transaction;
        raises QuotaError (429 with Retry-After, 413 for the bundle's size, 403 for a closed parent)."""
        now = time.time()
        await self._create_missing(quota, now, explicit=False)
        chain = qt.ancestry(quota)
        nodes = await self.nodes(chain)
        limited = [p for p in chain if any(nodes[p][k] is not None for k in HARD)]
        if limited and self.engine.dialect.lock():  # starts under one limit take turns (each counts the others)
            await self.engine.all(f"SELECT path FROM quota_nodes WHERE path IN ({','.join('?' * len(limited))}) "
                                  f"ORDER BY path{self.engine.dialect.lock()}", *limited)
        for node in chain:
            limits = nodes[node]
            if limits["bundle_bytes"] is not None and bundle is not None:
                row = await self.engine.one("SELECT size FROM bundles WHERE digest = ?", bundle)
                if row is not None and row["size"] > limits["bundle_bytes"]:
                    raise QuotaError(f"quota {node}: the bundle is {row['size']} bytes, over the limit of "
                                     f"{limits['bundle_bytes']} bundle bytes", 413)
            if limits["live"] is not None:
                live = (await self.engine.the(
                    f"SELECT COUNT(*) AS n FROM flows WHERE status IN {LIVE} AND {qt.subtree_sql()}",
                    *qt.subtree_params(node)))["n"]
                if live >= limits["live"]:
                    raise QuotaError(qt.describe(node, "live", live, limits["live"]), 429, retry_after=5.0)
            if limits["rate"] is not None:
                recent = [r["created"] for r in await self.engine.all(
                    f"SELECT created FROM flows WHERE created > ? AND {qt.subtree_sql()} ORDER BY created",
                    now - 60.0, *qt.subtree_params(node))]
                if len(recent) >= limits["rate"]:
                    # room comes back when enough of the window's starts are older than a minute
                    frees = recent[len(recent) - limits["rate"]] + 60.0 if limits["rate"] else now + 60.0
                    raise QuotaError(qt.describe(node, "rate", len(recent), limits["rate"]), 429,
                                     retry_after=max(frees - now, 1.0))
        return self._caps(nodes, quota)

    async def open_refusal(self, quota: str) -> qt.Refusal | None:
        """The nearest node of ``quota``'s ancestry whose ``resources`` limit one more open would pass
        (inside the append's transaction)."""
        chain = qt.ancestry(quota)
        limited = [(p, n["resources"]) for p, n in (await self.nodes(chain)).items() if n["resources"] is not None]
        if limited and self.engine.dialect.lock():  # opens under one limit take turns (each counts the others)
            await self.engine.all(f"SELECT path FROM quota_nodes WHERE path IN ({','.join('?' * len(limited))}) "
                                  f"ORDER BY path{self.engine.dialect.lock()}", *[p for p, _ in limited])
        for node, allowed in sorted(limited, key=lambda item: -len(item[0])):
            used = (await self.engine.the(f"SELECT COUNT(*) AS n {OPEN_RESOURCES} AND {qt.subtree_sql('f.quota')}",
                                          *qt.subtree_params(node)))["n"]
            if used >= allowed:
                return qt.Refusal(node, "resources", used, allowed)
        return None

    # -- the claim order ------------------------------------------------------------------------

    async def pick(self, limit: int) -> list[str]:
        """Which runnable flows to lease now (inside the claim's transaction): fair across nodes,
        none whose ancestry is at its running limit (``quota_tree.fair_pick``)."""
        # The nodes first: on PostgreSQL their rows are locked, so that claimers under a running limit
        # take turns (each must count the others' claims) while the others claim side by side.
        shaping = "SELECT path, running, share FROM quota_nodes WHERE running IS NOT NULL OR share != 1 ORDER BY path"
        nodes = await self.engine.all(shaping)
        if any(r["running"] is not None for r in nodes) and self.engine.dialect.lock():
            nodes = await self.engine.all(shaping + self.engine.dialect.lock())
        queued = [qt.Queued(r["id"], r["quota"], r["created"])
                  for r in await self.engine.all(self.engine.dialect.claim_queue(), limit)]
        if not queued:
            return []
        running_limits = {r["path"]: r["running"] for r in nodes if r["running"] is not None}
        self.running_limited = bool(running_limits)
        if not running_limits and len({f.quota for f in queued}) == 1:
            return [f.id for f in sorted(queued, key=lambda f: f.created)[:limit]]  # one node: oldest first
        running = await self.running_now()
        return qt.fair_pick(queued, running, running_limits, {r["path"]: r["share"] for r in nodes}, limit)

    def room_freed(self) -> None:
        """A flow stopped running (ended, suspended): under a running limit, pending flows may start."""
        if self.running_limited:
            self.engine.note("runnable")

    async def running_now(self) -> dict[str, int]:
        return {r["quota"]: r["n"] for r in await self.engine.all(RUNNING_NOW)}

    async def worker_caps(self, quotas: set[str]) -> dict[str, dict[str, Any]]:
        """Per quota node, the caps a worker applies to a flow's evaluation (``eval_budget``, ``memory``),
        each with the node that sets it (``eval_budget_node``, ``memory_node``)."""
        chains = {q: qt.ancestry(q) for q in quotas}
        nodes = await self.nodes(sorted({p for chain in chains.values() for p in chain}))
        caps: dict[str, dict[str, Any]] = {}
        for quota in quotas:
            caps[quota] = {}
            for limit in ("eval_budget", "memory"):
                found = qt.tightest(nodes, quota, limit)
                if found is not None:
                    caps[quota].update({limit: found[0], f"{limit}_node": found[1]})
        return caps

    # -- usage ----------------------------------------------------------------------------------

    async def tree(self, root: str) -> list[dict[str, Any]]:
        """Every node at or below ``root`` with its limits and its usage rolled up its subtree
        (running, pending, waiting, started in the last minute, the bytes of the journals it holds, its
        open resources), parents before children."""
        params = qt.subtree_params(root)
        rows = await self.engine.all(f"SELECT * FROM quota_nodes WHERE {qt.subtree_sql('path')}", *params)
        nodes = {r["path"]: node_json(r) for r in rows}
        usage_rows = await self.engine.all(
            f"SELECT quota, status, COUNT(*) AS n FROM flows WHERE status IN {LIVE} AND {qt.subtree_sql()} "
            "GROUP BY quota, status", *params)
        recent_rows = await self.engine.all(
            f"SELECT quota, COUNT(*) AS n FROM flows WHERE created > ? AND {qt.subtree_sql()} GROUP BY quota",
            time.time() - 60.0, *params)
        for quota in {r["quota"] for r in usage_rows} | {r["quota"] for r in recent_rows}:
            for node in qt.ancestry(quota):  # flows older than the tree: their nodes are implied
                if qt.under(node, root) and node not in nodes:
                    nodes[node] = {"path": node, "limits": {}, "share": 1, "open": True, "implied": True}
        bytes_rows = await self.engine.all(
            f"SELECT quota, SUM(journal_bytes) AS n FROM flows WHERE {qt.subtree_sql()} GROUP BY quota", *params)
        open_rows = await self.engine.all(
            f"SELECT f.quota, COUNT(*) AS n {OPEN_RESOURCES} AND {qt.subtree_sql('f.quota')} GROUP BY f.quota", *params)
        for record in nodes.values():
            record["usage"] = {"running": 0, "pending": 0, "waiting": 0, "live": 0, "rate": 0,
                               "journal_bytes": 0, "resources": 0}

        def add(quota: str, key: str, n: int) -> None:
            for path in qt.ancestry(quota):
                if path in nodes:
                    nodes[path]["usage"][key] += n

        for r in usage_rows:
            add(r["quota"], r["status"], r["n"])
            add(r["quota"], "live", r["n"])
        for r in recent_rows:
            add(r["quota"], "rate", r["n"])
        for r in bytes_rows:
            add(r["quota"], "journal_bytes", int(r["n"] or 0))
        for r in open_rows:
            add(r["quota"], "resources", r["n"])
        return [nodes[p] for p in sorted(nodes, key=lambda p: p.split("/")[1:] if p != "/" else [])
                if qt.under(p, root)]


async def cancel_subtree(engine: Engine, end: Any, node: str, username: str | None, reason: str) -> list[str]:
    """Cancel every live flow in the subtree at ``node`` (only ``username``'s when given) in one
    transaction; ``end`` is ``Flows.end`` (it answers a parent waiting on a cancelled child)."""
    sql = f"SELECT * FROM flows WHERE status IN {LIVE} AND {qt.subtree_sql()}"
    params: list[Any] = list(qt.subtree_params(node))
    if username is not None:
        sql += " AND username = ?"
        params.append(username)
    async with engine.transaction():
        rows = await engine.all(sql + " ORDER BY created", *params)
        for row in rows:
            current = await engine.one("SELECT * FROM flows WHERE id = ?", row["id"])
            if current is not None and current["status"] in ("pending", "running", "waiting"):
                await end(current, "cancelled", error={"message": reason, "traceback": ""})
        return [row["id"] for row in rows]
