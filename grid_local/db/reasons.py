"""Why a flow is not running now, in one line (``flowmetal why``, ``inspect``, the TUI).

Reasons, in the order they are looked for: it ended; an open journal entry (waiting for a child,
sleeping until a time, waiting for a message on an inbox, a request on a connector); a running
limit of its quota ancestry; no free worker slot yet; else it is running.
"""

from __future__ import annotations

import time
from typing import Any

from grid_local import quota_tree as qt
from grid_local.db.engine import Engine, loads
from grid_local.db.quotas import Quotas
from grid_local.db.rows import FINISHED
from grid_local.errors import NotFoundError


def when(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


class Reasons:
    def __init__(self, engine: Engine, quotas: Quotas) -> None:
        self.engine = engine
        self.quotas = quotas

    async def why(self, flow_id: str) -> dict[str, Any]:
        """``{"flow_id", "status", "kind", "reason"}``; kind is one of finished, child, sleep, message,
        request, quota, slot, running."""
        flow = await self.engine.one("SELECT id, status, quota, created, lease_owner FROM flows WHERE id = ?", flow_id)
        if flow is None:
            raise NotFoundError(f"no flow {flow_id}")
        kind, reason = await self._reason(flow)
        return {"flow_id": flow_id, "status": flow["status"], "kind": kind, "reason": reason}

    async def reasons(self, flow_ids: list[str]) -> dict[str, str]:
        """The one-line reason of each live flow among ``flow_ids`` (a flow list's ``?why=true``), reading
        the running limits and the running counts once for all of them."""
        if not flow_ids:
            return {}
        found: dict[str, str] = {}
        limits: dict[str, int] | None = None
        running: dict[str, int] | None = None
        for start in range(0, len(flow_ids), 500):  # under every engine's bound on parameters
            chunk = flow_ids[start:start + 500]
            rows = await self.engine.all(
                f"SELECT id, status, quota, created, lease_owner FROM flows WHERE id IN ({','.join('?' * len(chunk))}) "
                f"AND status NOT IN {FINISHED!r}", *chunk)
            for flow in rows:
                if limits is None:
                    nodes = await self.engine.all("SELECT path, running FROM quota_nodes WHERE running IS NOT NULL")
                    limits = {r["path"]: r["running"] for r in nodes}
                    running = await self.quotas.running_now() if limits else {}
                found[flow["id"]] = (await self._reason(flow, limits, running))[1]
        return found

    async def _reason(self, flow: Any, limits: dict[str, int] | None = None,
                      running: dict[str, int] | None = None) -> tuple[str, str]:
        if flow["status"] in FINISHED:
            return "finished", f"not waiting: it {flow['status']}"
        entry = await self.engine.one(
            "SELECT seq, kind, args, deadline FROM journal WHERE flow_id = ? AND result IS NULL ORDER BY seq DESC LIMIT 1",
            flow["id"])
        if entry is not None:
            return await self._open_entry(entry)
        if flow["status"] == "running":
            return "running", f"running on worker {flow['lease_owner']}"
        if limits is None:
            nodes = await self.engine.all("SELECT path, running FROM quota_nodes WHERE running IS NOT NULL")
            limits = {r["path"]: r["running"] for r in nodes}
        if limits:
            refusal = qt.blocking_limit(flow["quota"], running if running is not None else await self.quotas.running_now(),
                                        limits)
            if refusal is not None:
                return "quota", f"waiting for {refusal.message}"
        ahead = (await self.engine.the(
            "SELECT COUNT(*) AS n FROM flows WHERE runnable = 1 AND lease_owner IS NULL AND created < ?",
            flow["created"]))["n"]
        return "slot", "waiting for a worker slot" + (f" ({ahead} flows queued before it)" if ahead else "")

    async def _open_entry(self, entry: Any) -> tuple[str, str]:
        args = loads(entry["args"]) or {}
        if entry["kind"] == "wait":
            ids = [t["flow_id"] for t in args.get("tasks") or [] if isinstance(t, dict) and "flow_id" in t]
            marks = ",".join("?" * len(ids))
            rows = await self.engine.all(
                f"SELECT id, name FROM flows WHERE id IN ({marks}) AND status NOT IN {FINISHED!r}", *ids) if ids else []
            names = [f"{r['name']} ({r['id']})" for r in rows]
            if len(names) == 1:
                return "child", f"waiting for child {names[0]}"
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            return "child", f"waiting for {len(names)} children: {shown}"
        if entry["kind"] == "sleep":
            return "sleep", f"sleeping until {when(entry['deadline'])}" if entry["deadline"] else "sleeping"
        if entry["kind"] == "receive":
            until = f" until {when(entry['deadline'])}" if entry["deadline"] else ""
            return "message", f"waiting for a message on inbox {args.get('inbox', '_stdin')}{until}"
        return "request", f"waiting for the answer to its {entry['kind']} request (journal entry {entry['seq']})"
