"""Who a Client API caller is (a token names a user, a quota node and a role) and what it may do.

Roles, from ``grid_local/quota_tree.py``: an ``admin`` of a node sees and steers every flow in its
subtree and sets limits below its node; a ``member`` starts flows in its node and sees and steers
its own; a ``viewer`` only reads. Every refusal is a 403 raised before anything is written.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from fastapi import HTTPException
from pydantic import BaseModel

from grid_local import quota_tree as qt
from grid_local.records import FlowRecord

Role = Literal["admin", "member", "viewer"]


class Identity(BaseModel):
    user: str
    quota: str
    role: Role = "member"


def load_tokens(path: Path | None) -> dict[str, Identity] | None:
    """``[tokens."<token>"] user = "alice" quota = "/acme/ci" role = "member"`` (role defaults to
    member); None means a local, token-less grid."""
    if path is None:
        return None
    data = tomllib.loads(path.read_text())
    tokens = {}
    for token, entry in (data.get("tokens") or {}).items():
        role = str(entry.get("role", "member"))
        if role not in qt.ROLES:
            raise ValueError(f"{path}: token of {entry.get('user')!r}: role {role!r} is not one of {', '.join(qt.ROLES)}")
        tokens[token] = Identity(user=str(entry["user"]), quota=qt.normalize(str(entry.get("quota", "/"))),
                                 role=role)  # type: ignore[arg-type]
    return tokens


def refuse(message: str) -> HTTPException:
    return HTTPException(403, message)


def require_writer(who: Identity, what: str) -> None:
    """Viewers only read."""
    if who.role == "viewer":
        raise refuse(f"{who.user} is a viewer of {who.quota} and may not {what}")


def require_visible(flow: FlowRecord, who: Identity) -> None:
    if not qt.under(flow["quota"], who.quota):  # answered exactly as an unknown id: ids cannot be probed
        raise HTTPException(404, f"no flow {flow['id']}")
    if not qt.may_see(who.role, who.quota, who.user, flow["quota"], flow["username"]):
        raise refuse(f"flow {flow['id']} is {flow['username']}'s: a member of {who.quota} sees only its own flows")


def require_steer(flow: FlowRecord, who: Identity, what: str) -> None:
    require_visible(flow, who)
    require_writer(who, what)
    if not qt.may_steer(who.role, who.quota, who.user, flow["quota"], flow["username"]):
        raise refuse(f"{who.user} may not {what} flow {flow['id']} of {flow['username']} "
                     f"(only an admin of its quota node or above)")


def node_path(path: str) -> str:
    """A quota node path from a request, normalized; one that is not a node path answers 422."""
    try:
        return qt.normalize(path)
    except qt.QuotaPathError as exc:
        raise HTTPException(422, str(exc)) from None


def start_node(who: Identity, requested: str | None) -> str:
    """The node a start lands in: the caller's, or (for an admin) one below it."""
    require_writer(who, "start flows")
    if requested is None:
        return who.quota
    node = node_path(requested)
    if not qt.may_start_in(who.role, who.quota, node):
        raise refuse(f"{who.user} ({who.role} of {who.quota}) may not start flows in {node}")
    return node
