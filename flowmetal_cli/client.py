"""The grid client: the only way the CLI and the TUI reach a grid (its Client API, over httpx).

Every failure of the remote becomes one ``ClientError`` with a message fit for one line on
stderr and the exit code the CLI documents: 3 unreachable, 4 refused (token, quota), 2 for
requests the grid found malformed or naming nothing it knows (404), 1 otherwise. Idempotent
calls are retried on 5xx with backoff; 429 honours Retry-After.
"""

from __future__ import annotations

import email.utils
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from grid_local.errors import FlowmetalError

RETRIES = 3
RETRY_AFTER_MAX = 30.0
"""The longest a 429's Retry-After is honoured for (seconds); longer waits are the caller's choice."""
UPLOAD_CHUNK = 256 * 1024

Progress = Callable[[int, int], None]
"""Upload progress: called with (bytes sent so far, total bytes)."""


class ClientError(FlowmetalError):
    exit_code = 1

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GridUnreachable(ClientError):
    exit_code = 3


class Refused(ClientError):
    exit_code = 4


class BadRequest(ClientError):
    exit_code = 2


class NotFound(ClientError):
    """No such flow, bundle or deployment: the caller named something wrong (a usage error)."""

    exit_code = 2


def _message(response: httpx.Response) -> str:
    """The grid's ``{error, message}``, else the body, as one short line (an HTML error page is not)."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and (data.get("message") or data.get("detail")):
        text = str(data.get("message") or data.get("detail"))
    else:
        text = response.text
    text = " ".join(text.split())
    if len(text) > 200:
        text = text[:197] + "..."
    return text or response.reason_phrase or f"HTTP {response.status_code}"


def retry_after(response: httpx.Response, default: float = 1.0) -> float:
    """Seconds to wait before retrying a 429: Retry-After as seconds or an HTTP date, capped."""
    raw = (response.headers.get("retry-after") or "").strip()
    seconds = default
    if raw:
        try:
            seconds = float(raw)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
                seconds = when.timestamp() - time.time()
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = default
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


class _Chunks:
    """A bundle's bytes as an iterable body that reports progress, and can be sent again on a retry."""

    def __init__(self, data: bytes, progress: Progress) -> None:
        self.data = data
        self.progress = progress

    def __iter__(self) -> Iterator[bytes]:
        total = len(self.data)
        self.progress(0, total)
        for start in range(0, total, UPLOAD_CHUNK):
            chunk = self.data[start:start + UPLOAD_CHUNK]
            yield chunk
            self.progress(start + len(chunk), total)


class GridClient:
    def __init__(self, url: str, token: str | None = None, context: str = "local", timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None, retry_pause: float = 0.2) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.context = context
        self.retry_pause = retry_pause
        if transport is None:
            # TCP_NODELAY: httpx writes a request's headers and body separately, and Nagle's algorithm
            # would hold the body back until the headers are acknowledged (milliseconds per call).
            transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "GridClient":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def request(self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> httpx.Response:
        idempotent = method in ("GET", "HEAD", "PUT", "DELETE") if idempotent is None else idempotent
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.ConnectError as exc:
                if "SSL" in str(exc) or "certificate" in str(exc).lower():
                    raise GridUnreachable(f"TLS error talking to context '{self.context}' at {self.url}: {exc}") from None
                reason = " ".join(str(exc).split())
                if not reason or "refused" in reason.lower():
                    reason = "connection refused"
                raise GridUnreachable(f"cannot reach the grid of context '{self.context}' at {self.url} "
                                      f"({reason})") from None
            except httpx.TimeoutException:
                if idempotent and attempt < RETRIES:
                    continue
                raise GridUnreachable(f"the grid of context '{self.context}' at {self.url} timed out") from None
            except httpx.HTTPError as exc:
                raise GridUnreachable(f"cannot talk to the grid of context '{self.context}' at {self.url}: {exc}") from None
            status = response.status_code
            if status == 429 and attempt < RETRIES:
                time.sleep(retry_after(response))
                continue
            if status >= 500 and idempotent and attempt < RETRIES:
                time.sleep(self.retry_pause * 2 ** (attempt - 1))
                continue
            if status < 400:
                return response
            message = _message(response)
            if status in (401, 403):
                detail = "the token was refused" if status == 401 else "the token was refused here (permission denied)"
                said = detail if message.lower() in (detail, "the token was refused") else f"{detail}: {message}"
                raise Refused(f"context '{self.context}': {said}", status)
            if status == 429:
                raise Refused(f"context '{self.context}': quota exceeded: {message}", status)
            if status == 404:
                raise NotFound(message, status)
            if status == 409:
                raise ClientError(f"conflict: {message}", status)
            if status == 413:
                raise BadRequest(f"too large for the grid: {message}", status)
            if 400 <= status < 500:
                raise BadRequest(message, status)
            raise ClientError(f"the grid failed ({status}): {message}", status)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ClientError(f"the grid of context '{self.context}' at {self.url} answered {method} {path} "
                              f"with something other than JSON ({response.status_code})") from None

    # -- calls --------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/v1/health")

    def has_bundle(self, digest: str) -> bool:
        try:
            self.request("HEAD", f"/v1/bundles/{digest}")
            return True
        except NotFound:
            return False

    def upload_bundle(self, data: bytes, digest: str, progress: Progress | None = None) -> dict[str, Any]:
        """PUT the archive; ``progress`` (sent, total) is called as it goes out (again from 0 on a retry)."""
        headers = {"Content-Type": "application/zip"}
        if progress is None:
            return self._json("PUT", f"/v1/bundles/{digest}", content=data, headers=headers)
        # An explicit Content-Length keeps the body un-chunked (the grid checks it before reading).
        headers["Content-Length"] = str(len(data))
        return self._json("PUT", f"/v1/bundles/{digest}", content=_Chunks(data, progress), headers=headers)

    def get_bundle(self, digest: str) -> bytes:
        return self.request("GET", f"/v1/bundles/{digest}").content

    def start_flow(self, digest: str, args: dict[str, Any], name: str | None = None,
                   quota: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"bundle": digest, "args": args, "name": name}
        if quota is not None:
            body["quota"] = quota
        return self._json("POST", "/v1/flows", json=body)

    def list_flows(self, **filters: Any) -> list[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        return self._json("GET", "/v1/flows", params=params)

    def get_flow(self, flow_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/flows/{flow_id}")

    def cancel(self, flow_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/flows/{flow_id}/cancel", idempotent=True)

    def send(self, flow_id: str, value: Any, inbox: str = "_stdin") -> dict[str, Any]:
        return self._json("POST", f"/v1/flows/{flow_id}/messages", json={"value": value, "inbox": inbox})

    def events(self, after: int = 0, root: str | None = None, wait: float = 0) -> dict[str, Any]:
        params: dict[str, Any] = {"after": after, "wait": wait}
        if root:
            params["root"] = root
        return self._json("GET", "/v1/events", params=params, timeout=wait + 30)

    def processes(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/processes")["processes"]

    def kill(self, pid: int) -> dict[str, Any]:
        return self._json("POST", f"/v1/processes/{pid}/kill")

    def inject(self, flow_id: str, action: str, seconds: float = 0.0) -> dict[str, Any]:
        return self._json("POST", f"/v1/flows/{flow_id}/inject", json={"action": action, "seconds": seconds})

    def deploy(self, name: str, digest: str) -> dict[str, Any]:
        return self._json("PUT", f"/v1/deployments/{name}", json={"digest": digest})

    def deployments(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/deployments")

    def start_deployment(self, name: str, args: dict[str, Any], quota: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"args": args}
        if quota is not None:
            body["quota"] = quota
        return self._json("POST", f"/v1/deployments/{name}/start", json=body)

    # -- triggers (webhooks and schedules) ----------------------------------------------------------

    def put_hook(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self._json("PUT", f"/v1/hooks/{name}", json=spec)

    def hooks(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/hooks")

    def get_hook(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/hooks/{name}")

    def delete_hook(self, name: str) -> dict[str, Any]:
        return self._json("DELETE", f"/v1/hooks/{name}")

    def post_hook(self, name: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """Deliver a webhook as a sender would (no bearer token: the signature authenticates it); the
        caller reads the status, since 401 here means a bad signature, not a refused token."""
        try:
            return self.http.post(f"/hooks/{name}", content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise GridUnreachable(f"cannot reach the grid of context '{self.context}' at {self.url}: {exc}") from None

    def put_schedule(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self._json("PUT", f"/v1/schedules/{name}", json=spec)

    def schedules(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/schedules")

    def delete_schedule(self, name: str) -> dict[str, Any]:
        return self._json("DELETE", f"/v1/schedules/{name}")

    def schedule_action(self, name: str, action: str) -> dict[str, Any]:
        """``pause``, ``resume`` or ``trigger`` (fire now)."""
        return self._json("POST", f"/v1/schedules/{name}/{action}", idempotent=action != "trigger")

    # -- the quota tree -----------------------------------------------------------------------------

    def quota_tree(self, node: str | None = None) -> dict[str, Any]:
        return self._json("GET", "/v1/quota/tree", params={} if node is None else {"node": node})

    def quota_show(self, node: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/quota/nodes/{node.strip('/')}")

    def quota_set(self, node: str, settings: dict[str, Any]) -> dict[str, Any]:
        return self._json("PUT", f"/v1/quota/nodes/{node.strip('/')}", json=settings)

    def cancel_subtree(self, node: str) -> dict[str, Any]:
        return self._json("POST", "/v1/quota/cancel", json={"node": node}, idempotent=True)

    def secret_set(self, name: str, value: str, quota: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"value": value}
        if quota is not None:
            body["quota"] = quota
        return self._json("PUT", f"/v1/secrets/{name}", json=body)

    def secrets(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/secrets")  # type: ignore[no-any-return]

    def secret_remove(self, name: str, quota: str | None = None) -> dict[str, Any]:
        return self._json("DELETE", f"/v1/secrets/{name}", params={"quota": quota} if quota else {})

    def why(self, flow_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/flows/{flow_id}/why")
