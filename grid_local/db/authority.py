"""A flow's authority: which tasks it may wait on, which flows it may send to, which resources it may use.

Everything a flow passes to an action is data it could have made up. Before the Flow DB answers
(or leases to a connector) a ``wait``, ``send`` or ``exec``, the append checks the request against
what the Flow DB itself knows about the requesting flow:

- ``wait``: every task names a child this flow started (its ``parent`` is this flow);
- ``send``: the target flow is in the sender's quota subtree, or in the sender's own flow tree
  (its ancestors and descendants share its root);
- ``exec``: the resource handle is exactly one that an ``open`` of this flow or of one of its
  ancestors returned (a handed-down handle works; a forged path or another flow's handle does not).

``receive`` needs no check: it reads only the requesting flow's own inboxes (it names no flow).
A refusal is the request's result, recorded in the append's transaction: the action fails with
that error and nothing else is touched.
"""

from __future__ import annotations

from typing import Any

from grid_local.db.engine import Row, Engine, loads
from grid_local.db.rows import under
from grid_local.runtime import journal as jr
from grid_local.runtime import rules


async def refusal(engine: Engine, flow: Row, kind: str, args: Any) -> dict[str, Any] | None:
    """The error result for a request outside the flow's authority; None when it may proceed."""
    if not isinstance(args, dict):
        return None
    if kind == "wait":
        return await _wait_refusal(engine, flow, args)
    if kind == "send":
        return await _send_refusal(engine, flow, args)
    if kind == "exec":
        return await _exec_refusal(engine, flow, args)
    return None


async def _wait_refusal(engine: Engine, flow: Row, args: dict[str, Any]) -> dict[str, Any] | None:
    tasks = args.get("tasks") or []
    ids = [t.get("flow_id") for t in tasks if isinstance(t, dict)]
    wanted = [i for i in ids if isinstance(i, str)]
    if not wanted:
        return None  # nothing that names a flow: wait_result answers "is not a task" for each
    marks = ",".join("?" * len(wanted))
    mine = {r["id"] for r in await engine.all(
        f"SELECT id FROM flows WHERE id IN ({marks}) AND parent = ?", *wanted, flow["id"])}
    for flow_id in wanted:
        if flow_id not in mine:
            return jr.err(f"wait: task {flow_id} was not started by this flow "
                          "(a flow waits only on the tasks its own run calls returned)")
    return None


async def _send_refusal(engine: Engine, flow: Row, args: dict[str, Any]) -> dict[str, Any] | None:
    target_id = args.get("flow_id")
    target = await engine.one("SELECT quota, root FROM flows WHERE id = ?", target_id) if isinstance(target_id, str) else None
    # A flow outside the sender's authority answers exactly as one that does not exist.
    if target is None or not (under(target["quota"], flow["quota"]) or target["root"] == flow["root"]):
        return rules.no_such_flow(target_id, flow["quota"])
    return None


async def _exec_refusal(engine: Engine, flow: Row, args: dict[str, Any]) -> dict[str, Any] | None:
    handle = args.get("resource")
    try:
        wanted = jr.canonical_json(handle)
    except Exception:
        wanted = None
    if isinstance(handle, dict) and wanted is not None:
        rows = await engine.all(
            "WITH RECURSIVE up(id, parent) AS (SELECT id, parent FROM flows WHERE id = ? "
            "UNION ALL SELECT f.id, f.parent FROM flows f JOIN up ON f.id = up.parent) "
            "SELECT j.result FROM journal j JOIN up ON j.flow_id = up.id "
            "WHERE j.kind = 'open' AND j.result IS NOT NULL",
            flow["id"],
        )
        for row in rows:
            result = loads(row["result"]) or {}
            if result.get("ok") and jr.canonical_json(result.get("value")) == wanted:
                return None
    name = handle.get("name") if isinstance(handle, dict) else None
    return jr.err(f"exec: resource {name or handle!r} is not one this flow opened "
                  "(pass fctx.resources.<name>; a handle cannot be made by hand)")
