"""The Client API: the only way in for the CLI and the TUI (FastAPI, so it publishes OpenAPI).

Every error is JSON ``{"error", "message"}`` with a status code (FastAPI's own validation and
routing errors too), and the OpenAPI document lists each status an operation can return. Input is
validated before anything is written. With a tokens file every request
needs ``Authorization: Bearer <token>``; the token names the user, the quota node and the role
the caller acts as (``api/roles.py``), and the caller sees only flows in that subtree.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import signal
import sqlite3
import sys
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from grid_local.api.hooks import hooks_router
from grid_local.api.notify import ANY_CHANGE, Notifier, PeerPoke, long_poll, watch_other_writers
from grid_local.api.problems import RETRY_AFTER_SECONDS, storage_problem
from grid_local.api.quotas import quotas_router
from grid_local.api.replies import BundleStored, Cancelled, Done, Health, Killed, MessageSent, Process, Processes
from grid_local.api.roles import Identity, load_tokens, require_steer, require_visible, require_writer, start_node
from grid_local.api.schedules import schedules_router
from grid_local.api.secrets import secrets_router
from grid_local.bundle_format import MAX_BUNDLE_BYTES, read_bundle
from grid_local.db.rows import under
from grid_local.db.secrets import load_key
from grid_local.db.store import FINISHED, FlowStore
from grid_local.errors import ArgumentError, BundleError, NotFoundError, QuotaError, StoreError
from grid_local.home import GridPaths, parent_pid, pid_alive
from grid_local.quota_tree import NODE_PATTERN
from grid_local.records import DeploymentRecord, EventPage, EventRecord, FlowDetail, FlowRecord, ListedFlow
from grid_local.runtime.journal import check_json
from grid_local.supervisor import workers_elsewhere

MAX_JSON_BODY = 1024 * 1024
BUSY_SECONDS = 10.0
"""How long a write waits for a locked Flow DB before the caller hears 503 (well within a client's timeout)."""
MAX_SQL_INTEGER = 2**63 - 1
"""The largest integer SQLite holds: a larger cursor or id is refused (422), not a 500."""

ERROR_NAMES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "invalid", 429: "quota_exceeded"}
ERROR_DESCRIPTIONS = {
    400: "Malformed input (a bundle that is not a valid archive, a body that cannot be parsed)",
    401: "Not authenticated: the bearer token (for /hooks, the signature) is missing or was refused",
    403: "Outside the caller's quota node, or not allowed to its role (admin, member, viewer)",
    404: "No such flow, bundle or deployment",
    409: "The flow has already ended, or the process may not be killed",
    413: "The body is over the limit (1 MiB of JSON; the bundle limit for uploads)",
    422: "Invalid parameters or body",
    429: "A limit of the quota tree refused the start (Retry-After says when to try again); nothing was written",
    500: "An unexpected failure of the Client API",
    503: "The Flow DB is locked or cannot be written just now; nothing was written, retry later",
    507: "The Flow DB's disk is full; nothing was written, retry when there is space",
}


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, as a word: not_found, invalid, disk_full, db_locked, ...")
    message: str = Field(description="One line for a person, naming the cause")


class StartFlow(BaseModel):
    bundle: str = Field(description="Digest of an uploaded bundle (sha256:...)")
    args: dict[str, Any] = Field(default_factory=dict, description="Arguments of the root flow")
    name: str | None = Field(default=None, description="Display name (default: the entry script)")
    quota: str | None = Field(default=None, max_length=1100, pattern=NODE_PATTERN,
                              description="The quota node to start in (default: the caller's; an admin may name one below)")


class Message(BaseModel):
    value: Any = Field(description="Any JSON value")
    inbox: str = Field(default="_stdin", min_length=1, max_length=200)


class Injection(BaseModel):
    action: Literal["fail", "delay"]
    seconds: float = Field(default=0.0, ge=0, le=3600)


class Deployment(BaseModel):
    digest: str


class StartDeployment(BaseModel):
    args: dict[str, Any] = Field(default_factory=dict)
    quota: str | None = Field(default=None, max_length=1100, pattern=NODE_PATTERN,
                              description="The quota node to start in (default: the caller's; an admin may name one below)")


class BodyLimit:
    """Refuse an oversized body: by its Content-Length before reading it, and by the bytes actually
    read (a chunked body has no length to check). The body is read whole before the app runs and
    handed to it in one message. A plain ASGI middleware: Starlette's BaseHTTPMiddleware would
    stream every request through an extra task."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = MAX_BUNDLE_BYTES if scope["path"].startswith("/v1/bundles/") else MAX_JSON_BODY
        too_large = JSONResponse({"error": "too_large", "message": f"body over {limit} bytes"}, status_code=413)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before its body arrived
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> Any:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


class ClientApi:
    def __init__(self, paths: GridPaths, tokens: dict[str, Identity] | None = None,
                 notify_port: int | None = None, peer_port: int | list[int] | None = None) -> None:
        self.paths = paths
        self.tokens = tokens
        self.notifier = Notifier()
        self.poke = PeerPoke(self.notifier, notify_port, peer_port)
        self.store: FlowStore | None = None
        user = getpass.getuser()
        self.local_identity = Identity(user=user, quota=f"/local/{user}", role="admin")

    @property
    def db(self) -> FlowStore:
        assert self.store is not None
        return self.store

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        self.store = await FlowStore.open(self.paths.flow_db, busy_seconds=BUSY_SECONDS)
        self.store.secrets.use_key(load_key(self.paths.home))
        self.store.on_commit.append(lambda notes: self.notifier.publish([ANY_CHANGE]))
        self.store.on_commit.append(self.poke.poke)
        await self.poke.start()
        watcher = asyncio.create_task(watch_other_writers(self.store, self.notifier))
        yield
        watcher.cancel()
        self.poke.close()
        await self.store.close()

    async def identity(self, request: Request) -> Identity:
        """Who the caller acts as (async: a sync dependency would cost a thread hop per request)."""
        if self.tokens is None:
            return self.local_identity
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "a bearer token is required (Authorization: Bearer <token>)")
        identity = self.tokens.get(token.strip())
        if identity is None:
            raise HTTPException(401, "the token was refused")
        return identity

    def owner(self, who: Identity) -> str | None:
        """Whose bundles a caller sees: its subtree's on a grid with tokens, every one on the local grid."""
        return who.quota if self.tokens is not None else None

    async def visible_flow(self, flow_id: str, who: Identity) -> FlowRecord:
        flow = await self.db.get_flow(flow_id)
        require_visible(flow, who)
        return flow

    async def steerable_flow(self, flow_id: str, who: Identity, what: str) -> FlowRecord:
        flow = await self.db.get_flow(flow_id)
        require_steer(flow, who, what)
        return flow

    def responses(self, *statuses: int) -> dict[int | str, dict[str, Any]]:
        """The OpenAPI answers of an operation: its own error statuses and those every one can give."""
        every = {422, 500, 503} | ({401} if self.tokens is not None else set())
        return {status: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status]}
                for status in sorted(every | set(statuses))}

    def app(self) -> FastAPI:
        app = FastAPI(title="Flowmetal Client API", version="1", lifespan=self.lifespan)
        ident = Depends(self.identity)
        answers = self.responses
        writes = (400, 413, 507)  # a body to read (and parse), and a row to write

        @app.exception_handler(StarletteHTTPException)
        async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
            message = str(exc.detail)
            headers = exc.headers
            if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):  # the router's own
                message = f"the Client API has no {request.method} {request.url.path}"
            if exc.status_code == 405:  # every method of the path (the router names only its first route's)
                allowed = {method for route in app.routes if isinstance(route, APIRoute)
                           and route.path_regex.match(request.url.path) for method in route.methods or ()}
                headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
            return JSONResponse({"error": ERROR_NAMES.get(exc.status_code, "error"), "message": message},
                                status_code=exc.status_code, headers=headers)

        @app.exception_handler(sqlite3.Error)
        @app.exception_handler(StoreError)
        async def storage_error(request: Request, exc: Exception) -> JSONResponse:
            problem = storage_problem(exc, self.paths.flow_db_label)
            if problem is None:
                return await internal_error(request, exc)
            status, error, message = problem
            print(f"client-api: {request.method} {request.url.path}: {message}", file=sys.stderr, flush=True)
            return JSONResponse({"error": error, "message": message}, status_code=status,
                                headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

        @app.exception_handler(Exception)
        async def internal_error(request: Request, exc: Exception) -> JSONResponse:
            traceback.print_exception(exc, file=sys.stderr)
            return JSONResponse({"error": "internal", "message": f"the Client API failed: {type(exc).__name__}: {exc}"},
                                status_code=500)

        @app.exception_handler(RequestValidationError)
        async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
                for e in exc.errors()
            )
            return JSONResponse({"error": "invalid", "message": problems}, status_code=422)

        @app.exception_handler(QuotaError)
        async def quota_refused(request: Request, exc: QuotaError) -> JSONResponse:
            headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after is not None else None
            return JSONResponse({"error": ERROR_NAMES.get(exc.status, "quota_exceeded"), "message": str(exc)},
                                status_code=exc.status, headers=headers)

        @app.exception_handler(NotFoundError)
        async def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
            return JSONResponse({"error": "not_found", "message": str(exc)}, status_code=404)

        @app.get("/v1/health", summary="Is the grid up", responses=answers())
        async def health() -> Health:
            return {"ok": True, "db": self.paths.flow_db_label, "auth": self.tokens is not None}

        @app.get("/v1/whoami", summary="Who the caller acts as", responses=answers())
        async def whoami(who: Identity = ident) -> Identity:
            return who

        @app.put("/v1/bundles/{digest}", status_code=201, summary="Upload a bundle (content-addressed, idempotent)",
                 responses=answers(400, 403, *writes))
        async def upload_bundle(digest: str, request: Request, who: Identity = ident) -> BundleStored:
            require_writer(who, "upload bundles")
            data = await request.body()
            if len(data) > MAX_BUNDLE_BYTES:
                raise HTTPException(413, f"bundle is {len(data)} bytes, over {MAX_BUNDLE_BYTES}")
            try:
                bundle = read_bundle(data, digest)
            except BundleError as exc:
                raise HTTPException(400, f"bundle refused: {exc}") from None
            created = await self.db.put_bundle(bundle.digest, data, bundle.entry, self.owner(who))
            return {"digest": bundle.digest, "created": created, "entry": bundle.entry, "files": sorted(bundle.files)}

        @app.head("/v1/bundles/{digest}", summary="Does the grid hold this bundle",
                  responses={200: {"description": "The grid holds it"}, **answers(404)})
        async def has_bundle(digest: str, who: Identity = ident) -> Response:
            if await self.db.has_bundle(digest, self.owner(who)):
                return Response(status_code=200)
            return Response(status_code=404, media_type="application/json")  # (a HEAD's 404 has no body)

        @app.get("/v1/bundles/{digest}", summary="Download a bundle", response_class=Response,
                 responses={200: {"content": {"application/zip": {}}, "description": "The bundle archive"},
                            **answers(404)})
        async def get_bundle(digest: str, who: Identity = ident) -> Response:
            return Response(await self.db.get_bundle(digest, self.owner(who)), media_type="application/zip")

        @app.post("/v1/flows", status_code=201, summary="Start a root flow from an uploaded bundle",
                  responses=answers(403, 404, 429, *writes))
        async def start_flow(body: StartFlow, who: Identity = ident) -> FlowRecord:
            node = start_node(who, body.quota)
            if not await self.db.has_bundle(body.bundle, self.owner(who)):
                raise HTTPException(404, f"no bundle {body.bundle}")
            try:
                check_json(body.args, "flow arguments")
            except ArgumentError as exc:
                raise HTTPException(422, str(exc)) from None
            return await self.db.start_flow(body.bundle, body.args, node, who.user, body.name)

        @app.get("/v1/flows", summary="List flows (newest first)", responses=answers())
        async def list_flows(
            status: str | None = Query(default=None, pattern="^(pending|running|waiting|completed|failed|cancelled)$"),
            root: str | None = None, quota: str | None = None, roots_only: bool = False,
            limit: int = Query(default=500, ge=1, le=5000),
            why: bool = Query(default=False, description="Add each live flow's one-line reason (as /why gives it)"),
            who: Identity = ident,
        ) -> list[ListedFlow]:
            node = who.quota if quota is None or not under(quota, who.quota) else quota
            flows: list[Any] = await self.db.list_flows(status=status, root=root, quota=node, limit=limit,
                                                        roots_only=roots_only,
                                                        username=who.user if who.role == "member" else None)
            if why:
                reasons = await self.db.reasons([f["id"] for f in flows if f["status"] in ("pending", "running", "waiting")])
                flows = [{**f, "why": reasons[f["id"]]} if f["id"] in reasons else f for f in flows]
            return flows

        @app.get("/v1/flows/{flow_id}", summary="A flow's record and journal", responses=answers(403, 404))
        async def inspect_flow(flow_id: str, who: Identity = ident) -> FlowDetail:
            flow = await self.visible_flow(flow_id, who)
            journal = [e.to_json() for e in await self.db.get_journal(flow_id)]
            children = [f["id"] for f in await self.db.list_flows(root=flow["root"]) if f["parent"] == flow_id]
            why = (await self.db.why(flow_id))["reason"]
            return {**flow, "journal": journal, "children": children, "why": why}

        @app.post("/v1/flows/{flow_id}/cancel", summary="Cancel a flow and its children",
                  responses=answers(403, 404, 409, *writes))
        async def cancel_flow(flow_id: str, who: Identity = ident) -> Cancelled:
            flow = await self.steerable_flow(flow_id, who, "cancel")
            if flow["status"] in FINISHED:
                raise HTTPException(409, f"flow {flow_id} already {flow['status']}")
            return {"cancelled": await self.db.cancel_flow(flow_id, f"cancelled by {who.user}")}

        @app.post("/v1/flows/{flow_id}/messages", status_code=201, summary="Send a message to a flow's inbox",
                  responses=answers(403, 404, 409, *writes))
        async def send_message(flow_id: str, body: Message, who: Identity = ident) -> MessageSent:
            flow = await self.steerable_flow(flow_id, who, "send messages to")
            if flow["status"] in FINISHED:
                raise HTTPException(409, f"flow {flow_id} already {flow['status']}")
            try:
                check_json(body.value, "message")
            except ArgumentError as exc:
                raise HTTPException(422, str(exc)) from None
            return {"id": await self.db.send_message(flow_id, body.inbox, body.value, f"user:{who.user}")}

        @app.get("/v1/events", summary="Events after a cursor (long-poll with wait=seconds)",
                 responses=answers(403, 404))
        async def events(
            after: int = Query(default=0, ge=0, le=MAX_SQL_INTEGER), root: str | None = None,
            wait: float = Query(default=0, ge=0, le=60), who: Identity = ident,
        ) -> EventPage:
            if root is not None:
                await self.visible_flow(root, who)

            async def check() -> list[EventRecord]:
                found = await self.db.events_after(after, root=root)
                if root is None and self.tokens is not None:
                    found = [e for e in found if await self._event_visible(e, who)]
                return found

            found = await long_poll(self.notifier, [ANY_CHANGE], wait, check, bool)
            return {"events": found, "cursor": found[-1]["id"] if found else after}

        @app.post("/v1/flows/{flow_id}/inject", summary="Failure injection: fail or delay the flow's next action",
                  responses=answers(403, 404, *writes))
        async def inject(flow_id: str, body: Injection, who: Identity = ident) -> Done:
            await self.steerable_flow(flow_id, who, "inject failures into")
            await self.db.add_injection(flow_id, body.action, body.seconds)
            return {"ok": True}

        @app.get("/v1/processes", summary="The grid's processes (workers and connectors)", responses=answers())
        async def processes(who: Identity = ident) -> Processes:
            state = self.paths.read_state() or {}
            holdings = await self.db.holdings(who.quota if self.tokens is not None else "/")
            found: list[Process] = []
            elsewhere = await asyncio.to_thread(workers_elsewhere, state) if state else []
            for known in [*state.get("processes", []), *elsewhere]:
                process = Process(**known)
                held = holdings.get(process.get("id") or "", {"flows": [], "requests": []})
                process["alive"] = bool(process.get("remote")) or pid_alive(process.get("pid"))
                process["flows"] = len(held["flows"])
                process["held_flows"] = held["flows"]
                process["requests"] = held["requests"]
                found.append(process)
            return {"processes": found}

        @app.post("/v1/processes/{pid}/kill", responses=answers(403, 404, 409),
                  summary="Failure injection: SIGKILL a worker, a connector or one of the two APIs")
        async def kill_process(pid: int, background: BackgroundTasks, who: Identity = ident) -> Killed:
            """Only what the grid survives: the supervisor restarts each of these processes. The
            supervisor itself is refused (409): killing it would take the whole grid down."""
            if self.tokens is not None:
                raise HTTPException(403, "failure injection is only for the local grid")
            state = self.paths.read_state() or {}
            known = {p.get("pid"): p for p in state.get("processes", [])}
            target = known.get(pid)
            # grid.json may lag a restart by a moment: a pid is killed only while the supervisor is its parent.
            if target is None or (target.get("role") != "supervisor" and parent_pid(pid) != state.get("pid")):
                raise HTTPException(404, f"no process of this grid has pid {pid}")
            if target.get("role") == "supervisor":
                raise HTTPException(409, "the supervisor is not killed by failure injection: the grid does not "
                                         "survive it (kill a worker, a connector or an API)")
            if pid == os.getpid():
                background.add_task(_kill_self)  # answer first; the supervisor starts a new Client API
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return {"killed": pid, "role": target.get("role")}

        @app.put("/v1/deployments/{name}", summary="Register a named deployment of a bundle",
                 responses=answers(403, 404, *writes))
        async def deploy(name: str, body: Deployment, who: Identity = ident) -> DeploymentRecord:
            require_writer(who, "deploy")
            if not await self.db.has_bundle(body.digest, self.owner(who)):
                raise HTTPException(404, f"no bundle {body.digest}: upload it first")
            if not await self.db.put_deployment(name, body.digest, who.quota):
                raise HTTPException(403, f"deployment {name} belongs to a quota node outside {who.quota} "
                                         "(deployment names are shared by the grid: choose another)")
            return await self.db.get_deployment(name)

        @app.get("/v1/deployments", summary="List deployments", responses=answers())
        async def deployments(who: Identity = ident) -> list[DeploymentRecord]:
            return await self.db.list_deployments(who.quota)

        @app.post("/v1/deployments/{name}/start", status_code=201, summary="Start a deployed flow",
                  responses=answers(403, 404, 429, *writes))
        async def start_deployment(name: str, body: StartDeployment, who: Identity = ident) -> FlowRecord:
            require_writer(who, "start flows")
            deployment = await self.db.get_deployment(name)
            if not under(deployment["quota"], who.quota):  # answered exactly as an unknown name
                raise HTTPException(404, f"no deployment named '{name}'")
            return await start_flow(StartFlow(bundle=deployment["digest"], args=body.args, name=name, quota=body.quota), who)

        app.include_router(hooks_router(self))
        app.include_router(schedules_router(self))
        app.include_router(quotas_router(self))
        app.include_router(secrets_router(self))
        app.add_middleware(BodyLimit)
        return app

    async def _event_visible(self, event: EventRecord, who: Identity) -> bool:
        try:
            require_visible(await self.db.get_flow(event["root"]), who)
            return True
        except (NotFoundError, HTTPException):
            return False


async def _kill_self() -> None:
    """The Client API was asked to kill itself: SIGKILL once its answer has left."""
    await asyncio.sleep(0.1)
    os.kill(os.getpid(), signal.SIGKILL)


def create_app(paths: GridPaths, tokens_file: Path | None = None, notify_port: int | None = None,
               peer_port: int | list[int] | None = None) -> FastAPI:
    return ClientApi(paths, load_tokens(tokens_file), notify_port, peer_port).app()
