"""The grid client: the only way the CLI and the TUI reach a grid (its Client API, over httpx).

Every failure of the remote becomes one ``ClientError`` with a message fit for one line on
stderr and the exit code the CLI documents: 3 unreachable, 4 refused (token, quota), 2 for
requests the grid found malformed, 1 otherwise. Idempotent calls are retried on 5xx with
backoff; 429 honours Retry-After.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from grid_local.errors import FlowmetalError

RETRIES = 3


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
    exit_code = 1


def _message(response: httpx.Response) -> str:
    try:
        data = response.json()
        return str(data.get("message") or data.get("detail") or response.text)
    except ValueError:
        return response.text.strip() or response.reason_phrase


class GridClient:
    def __init__(self, url: str, token: str | None = None, context: str = "local", timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None, retry_pause: float = 0.2) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.context = context
        self.retry_pause = retry_pause
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
                raise GridUnreachable(f"cannot reach the grid of context '{self.context}' at {self.url} "
                                      f"(connection refused)") from None
            except httpx.TimeoutException:
                if idempotent and attempt < RETRIES:
                    continue
                raise GridUnreachable(f"the grid of context '{self.context}' at {self.url} timed out") from None
            except httpx.HTTPError as exc:
                raise GridUnreachable(f"cannot talk to the grid of context '{self.context}' at {self.url}: {exc}") from None
            status = response.status_code
            if status == 429 and attempt < RETRIES:
                time.sleep(min(float(response.headers.get("retry-after", "1") or 1), 30.0))
                continue
            if status >= 500 and idempotent and attempt < RETRIES:
                time.sleep(self.retry_pause * 2 ** (attempt - 1))
                continue
            if status < 400:
                return response
            message = _message(response)
            if status in (401, 403):
                detail = "the token was refused" if status == 401 else "permission denied"
                raise Refused(f"context '{self.context}': {detail}: {message}", status)
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
        return self.request(method, path, **kwargs).json()

    # -- calls --------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/v1/health")

    def has_bundle(self, digest: str) -> bool:
        try:
            self.request("HEAD", f"/v1/bundles/{digest}")
            return True
        except NotFound:
            return False

    def upload_bundle(self, data: bytes, digest: str) -> dict[str, Any]:
        return self._json("PUT", f"/v1/bundles/{digest}", content=data,
                          headers={"Content-Type": "application/zip"})

    def get_bundle(self, digest: str) -> bytes:
        return self.request("GET", f"/v1/bundles/{digest}").content

    def start_flow(self, digest: str, args: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        return self._json("POST", "/v1/flows", json={"bundle": digest, "args": args, "name": name})

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

    def start_deployment(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", f"/v1/deployments/{name}/start", json={"args": args})
