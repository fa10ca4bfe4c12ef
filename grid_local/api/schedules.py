"""The Client API's cron schedules: ``/v1/schedules`` (add, list, pause, resume, remove, trigger).

The clock connector fires them (see ``connectors/clock.py``); this router only manages them, and
``trigger`` fires one now (its overlap policy applies, as at a cron time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from grid_local.api.roles import require_writer
from grid_local.db.rows import under
from grid_local.errors import ArgumentError, NotFoundError
from grid_local.runtime.journal import check_json
from grid_local.triggers import cron
from grid_local.triggers.webhooks import check_hook_name

if TYPE_CHECKING:
    from grid_local.api.client_api import ClientApi, Identity


class ScheduleSpec(BaseModel):
    deployment: str = Field(min_length=1, max_length=128)
    cron: str = Field(min_length=1, max_length=200, description="Five cron fields, or six with seconds last")
    tz: str = Field(default="UTC", min_length=1, max_length=100, description="IANA time zone the cron is read in")
    args: dict[str, Any] = Field(default_factory=dict, description="Arguments of each flow it starts")
    overlap: Literal["skip", "allow", "cancel-previous"] = "skip"
    catch_up: Literal["none", "one", "all"] = "one"


def schedules_router(api: "ClientApi") -> APIRouter:
    router = APIRouter()
    ident = Depends(api.identity)
    answers = api.responses

    async def visible(name: str, who: "Identity") -> dict[str, Any]:
        """The schedule, when the caller's subtree holds it; one outside it answers as an unknown name."""
        schedule = await api.db.triggers.get_schedule(name)
        if not under(schedule["quota"], who.quota):
            raise NotFoundError(f"no schedule named '{name}'")
        return schedule

    @router.put("/v1/schedules/{name}", summary="Create or replace a cron schedule of a deployment",
                responses=answers(400, 403, 404, 413, 507))
    async def put_schedule(name: str, spec: ScheduleSpec, who: "Identity" = ident) -> dict[str, Any]:
        require_writer(who, "manage schedules")
        problem = check_hook_name(name) or cron.check_schedule(spec.cron, spec.tz)
        if problem:
            raise HTTPException(422, problem)
        try:
            check_json(spec.args, "schedule arguments")
        except ArgumentError as exc:
            raise HTTPException(422, str(exc)) from None
        deployment = await api.db.get_deployment(spec.deployment)
        if not under(deployment["quota"], who.quota):  # answered exactly as an unknown name
            raise NotFoundError(f"no deployment named '{spec.deployment}'")
        # A schedule of that name in another quota node stays theirs (403, checked as it is written).
        return await api.db.triggers.put_schedule(name, spec.deployment, deployment["quota"], who.user, spec.cron,
                                                  spec.tz, spec.args, spec.overlap, spec.catch_up, caller=who.quota)

    @router.get("/v1/schedules", summary="List schedules with their next fire times", responses=answers())
    async def list_schedules(who: "Identity" = ident) -> list[dict[str, Any]]:
        return [s for s in await api.db.triggers.list_schedules() if under(s["quota"], who.quota)]

    @router.get("/v1/schedules/{name}", summary="A schedule", responses=answers(403, 404))
    async def get_schedule(name: str, who: "Identity" = ident) -> dict[str, Any]:
        return await visible(name, who)

    @router.delete("/v1/schedules/{name}", summary="Remove a schedule (its flows keep running)",
                   responses=answers(403, 404, 507))
    async def delete_schedule(name: str, who: "Identity" = ident) -> dict[str, Any]:
        require_writer(who, "manage schedules")
        await visible(name, who)
        await api.db.triggers.delete_schedule(name)
        return {"deleted": name}

    @router.post("/v1/schedules/{name}/pause", summary="Pause a schedule", responses=answers(403, 404, 507))
    async def pause(name: str, who: "Identity" = ident) -> dict[str, Any]:
        require_writer(who, "manage schedules")
        await visible(name, who)
        return await api.db.triggers.set_paused(name, True)

    @router.post("/v1/schedules/{name}/resume", summary="Resume a schedule from now (no catch-up of the pause)",
                 responses=answers(403, 404, 507))
    async def resume(name: str, who: "Identity" = ident) -> dict[str, Any]:
        require_writer(who, "manage schedules")
        await visible(name, who)
        return await api.db.triggers.set_paused(name, False)

    @router.post("/v1/schedules/{name}/trigger", status_code=201, summary="Fire a schedule now",
                 responses=answers(403, 404, 507))
    async def trigger(name: str, who: "Identity" = ident) -> dict[str, Any]:
        require_writer(who, "manage schedules")
        await visible(name, who)
        fired = await api.db.triggers.fire_schedule(name, None)
        assert fired is not None
        return fired

    return router
