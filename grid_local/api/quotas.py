"""The Client API's quota tree: usage against limits, setting limits, bulk cancel, and ``why``.

Reads are open to every role within its subtree; setting limits is an admin's, strictly below its
own node (its own node is its parent admin's); a bulk cancel takes an admin's whole subtree, or a
member's own flows. Refusals are 403 and write nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field

from grid_local import quota_tree as qt
from grid_local.api.roles import Identity, node_path, refuse, require_writer

if TYPE_CHECKING:
    from grid_local.api.client_api import ClientApi


NODE_PATH = Path(max_length=1100, pattern=qt.NODE_PATTERN, description="The node, e.g. acme/ci")


class QuotaSettings(BaseModel):
    """Changes to a node: a limit given as null is removed; one left out is unchanged."""

    running: int | None = Field(default=None, ge=0, le=10**9, description="Concurrent running flows")
    rate: int | None = Field(default=None, ge=0, le=10**9, description="Flows started per minute")
    live: int | None = Field(default=None, ge=0, le=10**9, description="Pending + running + waiting flows")
    journal_entries: int | None = Field(default=None, ge=1, le=10**9, description="Journal entries per flow")
    journal_bytes: int | None = Field(default=None, ge=1, le=10**12, description="Journal bytes per flow")
    bundle_bytes: int | None = Field(default=None, ge=1, le=10**12, description="Size of a bundle a start may use")
    eval_budget: float | None = Field(default=None, gt=0, le=86400, description="Cap on a bundle's [limits] eval_budget (s)")
    resources: int | None = Field(default=None, ge=0, le=10**9, description="Open resources (workspaces, containers)")
    memory: int | None = Field(default=None, ge=1, le=10**7, description="Cap on a bundle's [limits] memory_mib (MiB per flow)")
    share: int | None = Field(default=None, ge=1, le=1000, description="Weight in the fair claim order among siblings")
    open: bool | None = Field(default=None, description="Whether children are created on first use")


class CancelSubtree(BaseModel):
    node: str = Field(min_length=1, max_length=1100, pattern=qt.NODE_PATTERN, description="The subtree's node")


def _visible_node(node: str, who: Identity) -> None:
    if not qt.under(node, who.quota):
        raise refuse(f"quota node {node} is outside your quota node {who.quota}")


def quotas_router(api: "ClientApi") -> APIRouter:
    router = APIRouter()
    ident = Depends(api.identity)
    answers = api.responses

    @router.get("/v1/quota/tree", summary="The quota tree at a node: limits and usage rolled up",
                responses=answers(403))
    async def tree(node: str | None = Query(default=None, max_length=1100, pattern=qt.NODE_PATTERN), who: Identity = ident) -> dict[str, Any]:
        root = who.quota if node is None else node_path(node)
        _visible_node(root, who)
        return {"node": root, "nodes": await api.db.quotas.tree(root)}

    @router.get("/v1/quota/nodes/{path:path}", summary="One quota node: its limits and usage",
                responses=answers(403, 404))
    async def show(path: str = NODE_PATH, who: Identity = ident) -> dict[str, Any]:
        node = node_path(path)
        _visible_node(node, who)
        found = await api.db.quotas.tree(node)
        if not found or found[0]["path"] != node:
            raise HTTPException(404, f"no quota node {node}")
        chain = await api.db.quotas.nodes(qt.ancestry(node))
        inherited = {}
        for limit in qt.LIMITS:
            tight = qt.tightest(chain, node, limit)
            if tight is not None:
                inherited[limit] = {"value": tight[0], "node": tight[1]}
        return {**found[0], "effective": inherited}

    @router.put("/v1/quota/nodes/{path:path}", summary="Create a quota node or change its limits (admins, below their node)",
                responses=answers(400, 403, 413, 507))
    async def set_node(body: QuotaSettings, path: str = NODE_PATH, who: Identity = ident) -> dict[str, Any]:
        node = node_path(path)
        require_writer(who, "set quota limits")
        if not qt.may_set_limits(who.role, who.quota, node):
            if node == who.quota and who.role == "admin":
                raise refuse(f"the limits of {node} are set by an admin of its parent, not by its own admin")
            raise refuse(f"{who.user} ({who.role} of {who.quota}) may not set the limits of {node}: "
                         "only an admin of a node above it")
        changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None or k in qt.LIMITS}
        return await api.db.quotas.set_node(node, changes)

    @router.post("/v1/quota/cancel", summary="Cancel every live flow in a subtree (an admin's; a member's own)",
                 responses=answers(400, 403, 413, 507))
    async def cancel_subtree(body: CancelSubtree, who: Identity = ident) -> dict[str, Any]:
        node = node_path(body.node)
        _visible_node(node, who)
        require_writer(who, "cancel flows")
        only = None if who.role == "admin" else who.user
        return {"cancelled": await api.db.cancel_subtree(node, only, f"cancelled by {who.user} (all of {node})")}

    @router.get("/v1/flows/{flow_id}/why", summary="Why a flow is not running now, in one line",
                responses=answers(403, 404))
    async def why(flow_id: str, who: Identity = ident) -> dict[str, Any]:
        await api.visible_flow(flow_id, who)
        return await api.db.why(flow_id)

    return router
