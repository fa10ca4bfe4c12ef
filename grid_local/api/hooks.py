"""The Client API's webhooks: ``POST /hooks/NAME`` (what senders call) and ``/v1/hooks`` (managing them).

``/hooks/NAME`` takes no bearer token: the hook's signature is its authentication. It reads the
hook, checks the body's size and signature before writing anything (401 for a bad or missing
signature, 413 for a large body), then records the delivery and starts or messages its flows in
one transaction and answers 202 with the flow id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from grid_local.api.roles import require_writer
from grid_local.db.rows import under
from grid_local.errors import NotFoundError
from grid_local.triggers import signatures, webhooks

if TYPE_CHECKING:
    from grid_local.api.client_api import ClientApi
    from grid_local.api.roles import Identity


class HookSpec(BaseModel):
    deployment: str = Field(min_length=1, max_length=128, description="The deployment whose flows the hook starts or messages")
    signature: Literal["github", "hmac-sha256", "none"] = "github"
    secret: str | None = Field(default=None, max_length=4096, description="The shared secret (stored in the Flow DB)")
    secret_source: str = Field(default="", max_length=1000, description="Where the CLI read the secret (env:VAR or file:PATH)")
    to: Literal["start", "inbox"] = "start"
    inbox: str = Field(default="_stdin", min_length=1, max_length=200)
    match: str | None = Field(default=None, max_length=300,
                              description="inbox hooks: ARG=SOURCE, the flow argument that must equal the request's key")


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes even when it comes without a Content-Length."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise HTTPException(413, f"webhook body over {limit} bytes")
    return bytes(data)


def hooks_router(api: "ClientApi") -> APIRouter:
    router = APIRouter()
    ident = Depends(api.identity)
    answers = api.responses

    @router.post("/hooks/{name}", status_code=202, summary="Deliver a webhook (authenticated by its signature)",
                 responses=answers(400, 401, 403, 404, 413, 429, 507))
    async def deliver(name: str, request: Request) -> JSONResponse:
        hook = await api.db.triggers.get_hook(name, with_secret=True)
        body = await read_limited(request, webhooks.MAX_BODY)
        problem = signatures.signature_problem(hook["signature"], hook["secret"], body, request.headers)
        if problem is not None:
            raise HTTPException(401, problem)
        delivery = signatures.delivery_id(request.headers)
        flow_request = webhooks.flow_request(name, delivery, request.method, request.url.path,
                                             request.headers.items(), request.query_params.multi_items(), body)
        key = webhooks.match_value(hook["match"]["source"], flow_request) if hook["match"] else None
        flow_ids, redelivered = await api.db.triggers.deliver_hook(hook, flow_request, delivery, key)
        return JSONResponse({"flow_id": flow_ids[0] if flow_ids else None, "flow_ids": flow_ids,
                             "delivery": delivery, "redelivered": redelivered}, status_code=202)

    async def visible_hook(name: str, who: "Identity") -> dict[str, Any]:
        """The hook, when the caller's subtree holds it; one outside it answers as an unknown name."""
        hook = await api.db.triggers.get_hook(name)
        if not under(hook["quota"], who.quota):
            raise NotFoundError(f"no hook named '{name}'")
        return hook

    @router.put("/v1/hooks/{name}", summary="Create or replace a webhook of a deployment",
                responses=answers(400, 403, 404, 413, 507))
    async def put_hook(name: str, spec: HookSpec, who: "Identity" = ident) -> dict[str, Any]:
        require_writer(who, "manage webhooks")
        problem = webhooks.check_hook_name(name)
        if problem:
            raise HTTPException(422, problem)
        if spec.signature != "none" and not spec.secret:
            raise HTTPException(422, f"a {spec.signature} hook needs a secret")
        match_arg = match_source = None
        if spec.match:
            if spec.to != "inbox":
                raise HTTPException(422, "match routes inbox hooks only (use to = inbox)")
            try:
                match_arg, match_source = webhooks.parse_match(spec.match)
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from None
        deployment = await api.db.get_deployment(spec.deployment)
        if not under(deployment["quota"], who.quota):  # answered exactly as an unknown name
            raise NotFoundError(f"no deployment named '{spec.deployment}'")
        return await api.db.triggers.put_hook(  # a hook of that name in another quota node stays theirs (403)
            name, spec.deployment, deployment["quota"], who.user, spec.signature,
            spec.secret if spec.signature != "none" else None, spec.secret_source, spec.to, spec.inbox,
            match_arg, match_source, caller=who.quota,
        )

    @router.get("/v1/hooks", summary="List webhooks (never their secrets)", responses=answers())
    async def list_hooks(who: "Identity" = ident) -> list[dict[str, Any]]:
        return [h for h in await api.db.triggers.list_hooks() if under(h["quota"], who.quota)]

    @router.get("/v1/hooks/{name}", summary="A webhook (never its secret)", responses=answers(403, 404))
    async def get_hook(name: str, who: "Identity" = ident) -> dict[str, Any]:
        return await visible_hook(name, who)

    @router.delete("/v1/hooks/{name}", summary="Remove a webhook", responses=answers(403, 404, 507))
    async def delete_hook(name: str, who: "Identity" = ident) -> dict[str, Any]:
        require_writer(who, "manage webhooks")
        await visible_hook(name, who)
        await api.db.triggers.delete_hook(name)
        return {"deleted": name}

    return router

