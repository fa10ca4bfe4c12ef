"""The Worker API: how workers and connectors reach the Flow DB (they never open it themselves).

Plain Starlette rather than FastAPI: it is an internal protocol on the hot path of every action,
so requests are validated by hand and kept small. Long polls wait on in-process notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
import time
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from grid_local.api.notify import ANY_CHANGE, Notifier, PeerPoke, long_poll, wait_for, watch_other_writers
from grid_local.api.worker_auth import RequireToken, worker_token
from grid_local.api.problems import RETRY_AFTER_SECONDS, storage_problem
from grid_local.db.secrets import load_key
from grid_local.db.store import FlowStore
from grid_local.home import GridPaths
from grid_local.isolation import Isolation
from grid_local.errors import FlowmetalError, LeaseLostError, NotFoundError, StoreError
from grid_local.records import WorkerTask
from grid_local.runtime.journal import ALL_KINDS, CONNECTOR_KINDS, MAX_VALUE_BYTES, JournalEntry

# A journal value (MAX_VALUE_BYTES) and the request around it.
MAX_BODY = MAX_VALUE_BYTES + 1024 * 1024
MAX_WAIT = 30.0
SEEN_SECONDS = 10.0
"""A worker that has not called for this long is no longer listed (they heartbeat every 2 s)."""


class BadRequest(FlowmetalError):
    pass


def error_response(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status)


async def read_json(request: Request) -> dict[str, Any]:
    body = bytearray()
    async for chunk in request.stream():  # counted as read: a chunked body has no length to check first
        body += chunk
        if len(body) > MAX_BODY:
            raise BadRequest(f"request body is over {MAX_BODY} bytes")
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("expected a JSON object")
    return data


def field(data: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if name not in data:
        if default is ...:
            raise BadRequest(f"missing field '{name}'")
        return default
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"field '{name}' has the wrong type")
    return value


async def routing_error(request: Request, exc: Exception) -> Response:
    """The router's own refusals (no such path or method) in the same {error, message} shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 400
    error = {404: "not_found", 405: "method_not_allowed"}.get(status, "bad_request")
    return error_response(status, error, f"the Worker API has no {request.method} {request.url.path} ({exc})")


async def internal_error(request: Request, exc: Exception) -> Response:
    traceback.print_exception(exc, file=sys.stderr)
    return error_response(500, "internal", f"the Worker API failed: {type(exc).__name__}: {exc}")


def handle_errors(handler: Any) -> Any:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequest as exc:
            return error_response(400, "bad_request", str(exc))
        except NotFoundError as exc:
            return error_response(404, "not_found", str(exc))
        except LeaseLostError as exc:
            return error_response(409, "lease_lost", str(exc))
        except (sqlite3.Error, StoreError) as exc:
            # A full disk (507) or a locked database (503): nothing was written, and workers and
            # connectors retry the same call until it passes (api/wire.py).
            problem = storage_problem(exc, request.app.state.db_label)
            if problem is None:
                raise
            status, error, message = problem
            print(f"worker-api: {request.method} {request.url.path}: {message}", file=sys.stderr, flush=True)
            response = error_response(status, error, message)
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response
    return wrapped


class WorkerApi:
    def __init__(self, paths: GridPaths, notify_port: int | None = None,
                 peer_port: int | list[int] | None = None, isolation: Isolation | None = None) -> None:
        self.paths = paths
        self.isolation = isolation or Isolation()
        """The grid's policy; every connector takes it from here (``GET /v1/connectors/policy``)."""
        self.notifier = Notifier()
        self.poke = PeerPoke(self.notifier, notify_port, peer_port)
        self.store: FlowStore | None = None
        self._background: list[asyncio.Task[None]] = []
        self.deadlines_version = 0
        # Incarnations reported dead. A long-poll claim of a dead worker may still be parked here
        # (the server does not see the connection drop); it must never be handed a flow.
        self.gone: set[str] = set()
        self.seen: dict[str, dict[str, Any]] = {}
        """The workers that called this replica lately (wherever they run), for ``GET /v1/workers``."""

    @property
    def db(self) -> FlowStore:
        assert self.store is not None
        return self.store

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.store = await FlowStore.open(self.paths.flow_db)
        self.store.secrets.use_key(load_key(self.paths.home))
        self.store.on_commit.append(self._on_commit)
        self.store.on_commit.append(self.poke.poke)
        await self.poke.start()
        self._background = [
            asyncio.create_task(watch_other_writers(self.store, self.notifier)),
            asyncio.create_task(self._reaper()),
        ]
        yield
        for task in self._background:
            task.cancel()
        self.poke.close()
        await self.store.close()

    def _on_commit(self, notes: set[tuple[Any, ...]]) -> None:
        if ("deadlines",) in notes:
            self.deadlines_version += 1
        self.notifier.publish([*notes, ("commit",)])  # ("commit",): any change (a virtual clock's idleness)

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            with contextlib.suppress(Exception):
                await self.db.reap()

    # -- workers ------------------------------------------------------------------------------

    def saw(self, worker: str, request: Request, slots: Any = None) -> None:
        known = self.seen.setdefault(worker, {"id": worker, "since": time.time()})
        known["seen"] = time.time()
        known["address"] = request.client.host if request.client else None
        if isinstance(slots, int) and not isinstance(slots, bool):
            known["slots"] = slots

    async def workers(self, request: Request) -> Response:
        """The workers that called this replica within the last SEEN_SECONDS, and are not gone."""
        cutoff = time.time() - SEEN_SECONDS
        for worker in [w for w, known in self.seen.items() if known["seen"] < cutoff or w in self.gone]:
            del self.seen[worker]
        return JSONResponse({"workers": list(self.seen.values())})

    async def claim(self, request: Request) -> Response:
        data = await read_json(request)
        worker = field(data, "worker", str)
        limit = field(data, "limit", int, 1)
        wait = min(float(field(data, "wait", (int, float), 10.0)), MAX_WAIT)
        self.saw(worker, request)

        async def check() -> list[WorkerTask]:
            if worker in self.gone or await request.is_disconnected():
                raise LeaseLostError(f"worker {worker} is gone")
            tasks = await self.db.claim(worker, max(1, min(limit, 100)))
            if tasks and worker in self.gone:  # declared dead while claiming: hand them back
                await self.db.release_worker(worker, "worker exited")
                raise LeaseLostError(f"worker {worker} is gone")
            return tasks

        tasks = await long_poll(self.notifier, [("runnable",)], wait, check, bool)
        return JSONResponse({"tasks": tasks})

    async def bundle(self, request: Request) -> Response:
        data = await self.db.get_bundle(request.path_params["digest"])
        return Response(data, media_type="application/zip")

    async def append(self, request: Request) -> Response:
        flow_id = request.path_params["flow_id"]
        data = await read_json(request)
        worker = field(data, "worker", str)
        epoch = field(data, "epoch", int)
        raw = field(data, "entry", dict)
        kind = field(raw, "kind", str)
        if kind not in ALL_KINDS:
            raise BadRequest(f"unknown action kind '{kind}'")
        entry = JournalEntry(
            seq=field(raw, "seq", int), kind=kind, args=raw.get("args"), hash=field(raw, "hash", str),
            callsite=field(raw, "callsite", str, ""), result=field(raw, "result", (dict, type(None)), None),
            requested_at=field(raw, "requested_at", (int, float, type(None)), None),
        )
        take_child = field(data, "take_child", bool, False) and kind == "run" and worker not in self.gone
        appended = await self.db.append(flow_id, worker, epoch, entry, take_child=take_child)
        if appended.delay:  # failure injection: the request is committed, its answer held back
            await asyncio.sleep(appended.delay)
        answer: dict[str, Any] = {"result": appended.result}
        if appended.task is not None:
            answer["task"] = appended.task
        return JSONResponse(answer)

    async def result(self, request: Request) -> Response:
        flow_id = request.path_params["flow_id"]
        seq = int(request.path_params["seq"])
        wait = min(float(request.query_params.get("wait", "0")), MAX_WAIT)
        result, status = await long_poll(
            self.notifier, [("result", flow_id, seq), ("finished", flow_id)], wait,
            lambda: self.db.result_of(flow_id, seq),
            lambda answer: answer[0] is not None or answer[1] in ("cancelled", "failed", "completed"),
        )
        return JSONResponse({"result": result, "status": status})

    async def finish(self, request: Request) -> Response:
        flow_id = request.path_params["flow_id"]
        data = await read_json(request)
        status = field(data, "status", str)
        if status not in ("completed", "failed"):
            raise BadRequest("status must be 'completed' or 'failed'")
        await self.db.finish(
            flow_id, field(data, "worker", str), field(data, "epoch", int), status,
            result=data.get("result"), error=field(data, "error", (dict, type(None)), None),
        )
        return JSONResponse({"ok": True})

    async def suspend(self, request: Request) -> Response:
        data = await read_json(request)
        await self.db.suspend(request.path_params["flow_id"], field(data, "worker", str), field(data, "epoch", int))
        return JSONResponse({"ok": True})

    async def heartbeat(self, request: Request) -> Response:
        data = await read_json(request)
        flows = field(data, "flows", list, [])
        if request.path_params["worker"] in self.gone:
            raise LeaseLostError("this worker was declared gone")
        self.saw(request.path_params["worker"], request, data.get("slots"))
        stop = await self.db.heartbeat(request.path_params["worker"], [str(f) for f in flows])
        return JSONResponse({"stop": stop})

    async def worker_gone(self, request: Request) -> Response:
        died = field(await read_json(request), "died", (str, type(None)), None)  # how it died, if it crashed
        self.gone.add(request.path_params["worker"])
        released = await self.db.release_worker(request.path_params["worker"], "worker exited", died)
        return JSONResponse({"released": released})

    # -- connectors -----------------------------------------------------------------------------

    async def claim_requests(self, request: Request) -> Response:
        kinds = request.path_params["kind"].split(",")
        if not set(kinds) <= CONNECTOR_KINDS:
            raise BadRequest(f"connectors perform only {', '.join(sorted(CONNECTOR_KINDS))}")
        data = await read_json(request)
        executor = field(data, "executor", str)
        limit = field(data, "limit", int, 16)
        wait = min(float(field(data, "wait", (int, float), 10.0)), MAX_WAIT)
        holding = field(data, "holding", list, None)
        if holding is not None:
            if not all(isinstance(h, list) and len(h) == 2 and isinstance(h[0], str) and isinstance(h[1], int)
                       for h in holding):
                raise BadRequest("field 'holding' must list [flow_id, seq] pairs")
            await self.db.release_unheld_requests(executor, [(h[0], h[1]) for h in holding])

        async def check() -> list[dict[str, Any]]:
            if executor in self.gone or await request.is_disconnected():
                raise LeaseLostError(f"connector {executor} is gone")
            claimed = await self.db.claim_requests(kinds, executor, max(1, min(limit, 100)))
            if claimed and executor in self.gone:  # declared dead while claiming
                await self.db.release_executor(executor)
                raise LeaseLostError(f"connector {executor} is gone")
            return claimed

        claimed = await long_poll(self.notifier, [("requests", kind) for kind in kinds], wait, check, bool)
        for item in claimed:  # the values of the secrets it references, for the connector only
            values, why = await self.db.secrets.values_for(item["flow_id"], item["args"])
            if why:
                item["secret_error"] = why
            elif values:
                item["secrets"] = values
        return JSONResponse({"requests": claimed})

    async def record(self, request: Request) -> Response:
        data = await read_json(request)
        recorded = await self.db.record_result(
            field(data, "flow_id", str), field(data, "seq", int), field(data, "result", dict),
            executor=field(data, "executor", (str, type(None)), None),
        )
        return JSONResponse({"recorded": recorded})

    async def executor_gone(self, request: Request) -> Response:
        self.gone.add(request.path_params["executor"])
        released = await self.db.release_executor(request.path_params["executor"])
        return JSONResponse({"interrupted": released})

    async def deadlines(self, request: Request) -> Response:
        """The clock connector's view: every open deadline; long-polls until the set may have changed."""
        since = int(request.query_params.get("version", "-1"))
        wait = min(float(request.query_params.get("wait", "0")), MAX_WAIT)
        if since == self.deadlines_version and wait > 0:
            with self.notifier.subscribe(("deadlines",)) as woken:
                await wait_for(woken, wait)
        version = self.deadlines_version
        return JSONResponse({"version": version, "deadlines": await self.db.open_deadlines(),
                             "schedules": await self.db.triggers.due_schedules(),
                             "now": await self.db.clock.now(), "virtual": self.db.clock.virtual})

    async def fire(self, request: Request) -> Response:
        data = await read_json(request)
        fired = await self.db.fire_deadline(field(data, "flow_id", str), field(data, "seq", int))
        return JSONResponse({"fired": fired})

    async def advance_clock(self, request: Request) -> Response:
        """A virtual clock jumps to the next deadline when nothing can progress except by time."""
        wait = min(float(request.query_params.get("wait", "0")), MAX_WAIT)
        advanced = await long_poll(self.notifier, [("commit",), ANY_CHANGE], wait, self.db.clock.advance_if_idle,
                                   lambda found: found is not None)
        return JSONResponse({"advanced": advanced is not None, "now": await self.db.clock.now()})

    async def fire_schedule(self, request: Request) -> Response:
        """The clock connector fires a schedule whose next fire time it saw come (once: see fire_schedule)."""
        data = await read_json(request)
        fired = await self.db.triggers.fire_schedule(field(data, "name", str), float(field(data, "next_fire", (int, float))))
        return JSONResponse({"fired": fired})

    async def deliver(self, request: Request) -> Response:
        """The inbox connector's sweep: waits for new messages, then hands them to open receives."""
        wait = min(float(request.query_params.get("wait", "0")), MAX_WAIT)
        with self.notifier.subscribe(("inbox",), ("runnable",)) as woken:
            delivered = await self.db.deliver_pending()
            if not delivered and wait > 0:
                await wait_for(woken, wait)
                delivered = await self.db.deliver_pending()
        return JSONResponse({"delivered": delivered})

    async def finished(self, request: Request) -> Response:
        """The resources connector's question: which of these flows have ended? (Long-polls up to ``wait``.)"""
        data = await read_json(request)
        flow_ids = [str(f) for f in field(data, "flow_ids", list)][:1000]
        wait = min(float(field(data, "wait", (int, float), 0)), MAX_WAIT)
        ended = await long_poll(self.notifier, [("finished", flow_id) for flow_id in flow_ids], wait,
                                lambda: self.db.finished_among(flow_ids), bool)
        return JSONResponse({"finished": ended})

    async def log(self, request: Request) -> Response:
        """A connector streaming a command's output into the flow's log (its _stdout or _stderr inbox)."""
        data = await read_json(request)
        flow_id, stream = field(data, "flow_id", str), field(data, "stream", str)
        if stream not in ("_stdout", "_stderr"):
            raise BadRequest("stream must be '_stdout' or '_stderr'")
        lines = [str(line) for line in field(data, "lines", list)][:1000]
        for line in lines:
            await self.db.send_message(flow_id, stream, line, "connector:resources")
        return JSONResponse({"logged": len(lines)})

    async def policy(self, request: Request) -> Response:
        """The grid's isolation policy, which connectors apply wherever they run (not their own flags)."""
        return JSONResponse(self.isolation.describe())

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True, "db": self.paths.flow_db_label})

    def app(self) -> Starlette:
        routes = [
            Route("/v1/health", self.health),
            Route("/v1/workers", handle_errors(self.workers)),
            Route("/v1/workers/claim", handle_errors(self.claim), methods=["POST"]),
            Route("/v1/workers/{worker}/heartbeat", handle_errors(self.heartbeat), methods=["POST"]),
            Route("/v1/workers/{worker}/gone", handle_errors(self.worker_gone), methods=["POST"]),
            Route("/v1/bundles/{digest}", handle_errors(self.bundle)),
            Route("/v1/flows/{flow_id}/journal", handle_errors(self.append), methods=["POST"]),
            Route("/v1/flows/{flow_id}/journal/{seq:int}", handle_errors(self.result)),
            Route("/v1/flows/{flow_id}/finish", handle_errors(self.finish), methods=["POST"]),
            Route("/v1/flows/{flow_id}/suspend", handle_errors(self.suspend), methods=["POST"]),
            Route("/v1/connectors/requests/{kind}/claim", handle_errors(self.claim_requests), methods=["POST"]),
            Route("/v1/connectors/results", handle_errors(self.record), methods=["POST"]),
            Route("/v1/connectors/{executor}/gone", handle_errors(self.executor_gone), methods=["POST"]),
            Route("/v1/connectors/clock/deadlines", handle_errors(self.deadlines)),
            Route("/v1/connectors/clock/fire", handle_errors(self.fire), methods=["POST"]),
            Route("/v1/connectors/clock/advance", handle_errors(self.advance_clock), methods=["POST"]),
            Route("/v1/connectors/clock/schedules/fire", handle_errors(self.fire_schedule), methods=["POST"]),
            Route("/v1/connectors/inbox/deliver", handle_errors(self.deliver), methods=["POST"]),
            Route("/v1/connectors/resources/finished", handle_errors(self.finished), methods=["POST"]),
            Route("/v1/connectors/log", handle_errors(self.log), methods=["POST"]),
            Route("/v1/connectors/policy", handle_errors(self.policy)),
        ]
        app = Starlette(routes=routes, lifespan=self.lifespan, exception_handlers={
            HTTPException: routing_error, Exception: internal_error})
        app.state.db_label = self.paths.flow_db_label
        token = worker_token(self.paths.home)
        if token:  # the supervisor always gives one; a Worker API started by hand without one is open
            app.add_middleware(RequireToken, token=token)
        return app


def create_app(paths: GridPaths, notify_port: int | None = None,
               peer_port: int | list[int] | None = None, isolation: Isolation | None = None) -> Starlette:
    return WorkerApi(paths, notify_port, peer_port, isolation).app()
