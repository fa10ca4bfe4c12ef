"""The Client API's secrets: ``/v1/secrets`` (set, list, remove). Values go in and never come out.

A secret belongs to a quota node: the caller's own by default; an admin may name a node below its
own (the rule for starting flows there). Listing shows names, nodes and who set them, never values,
and only of the caller's subtree; removing a secret outside it answers as an unknown one (404).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from grid_local import quota_tree as qt
from grid_local.api.roles import node_path, refuse, require_writer
from grid_local.db.secrets import NAME_PATTERN
from grid_local.errors import NotFoundError
from grid_local.quota_tree import NODE_PATTERN

if TYPE_CHECKING:
    from grid_local.api.client_api import ClientApi, Identity

MAX_SECRET_BYTES = 64 * 1024


class SecretValue(BaseModel):
    value: str = Field(max_length=MAX_SECRET_BYTES, description="The secret's value (never answered back)")
    quota: str | None = Field(default=None, max_length=1100, pattern=NODE_PATTERN,
                              description="The quota node it belongs to (default: the caller's)")


def secrets_router(api: "ClientApi") -> APIRouter:
    router = APIRouter()
    ident = Depends(api.identity)
    answers = api.responses

    def node_for(who: "Identity", quota: str | None, what: str, unknown: str = "") -> str:
        """The node a secret is set at or removed from: the caller's, or (an admin's) one below it.
        Outside the caller's subtree, a removal answers exactly as for an unknown secret (``unknown``:
        404), so names cannot be probed; setting there is refused (403)."""
        require_writer(who, what)
        if quota is None:
            return who.quota
        node = node_path(quota)
        if not qt.under(node, who.quota):
            if unknown:
                raise NotFoundError(f"{unknown} at {node}")
            raise refuse(f"{who.user} ({who.role} of {who.quota}) may not {what} at {node}: it is outside "
                         f"{who.quota}")
        if not qt.may_start_in(who.role, who.quota, node):
            raise refuse(f"{who.user} ({who.role} of {who.quota}) may not {what} at {node} "
                         "(only an admin, below its own node)")
        return node

    @router.put("/v1/secrets/{name}", summary="Set a secret of a quota node (its value is stored encrypted)",
                responses=answers(400, 403, 413, 507))
    async def put_secret(body: SecretValue, name: str = Path(pattern=NAME_PATTERN), who: "Identity" = ident,
                         ) -> dict[str, Any]:
        node = node_for(who, body.quota, "set secrets")
        await api.db.secrets.put(node, name, body.value, who.user)
        return {"name": name, "quota": node, "set_by": who.user}

    @router.get("/v1/secrets", summary="List the secrets of the caller's subtree (names, never values)",
                responses=answers())
    async def list_secrets(who: "Identity" = ident) -> list[dict[str, Any]]:
        return await api.db.secrets.listing(who.quota)

    @router.delete("/v1/secrets/{name}", summary="Remove a secret", responses=answers(403, 404, 507))
    async def delete_secret(
        name: str = Path(pattern=NAME_PATTERN),
        quota: str | None = Query(default=None, max_length=1100, pattern=NODE_PATTERN), who: "Identity" = ident,
    ) -> dict[str, Any]:
        node = node_for(who, quota, "remove secrets", unknown=f"no secret {name}")
        await api.db.secrets.remove(node, name)
        return {"removed": name, "quota": node}

    return router
