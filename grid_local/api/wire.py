"""The internal JSON-over-HTTP client of workers, connectors and the supervisor (Worker API calls).

Plain ``http.client`` with one keep-alive connection per thread: it costs a fraction of httpx's
memory in each of the grid's small processes and of its per-call overhead on the hot path of
every action. The user-facing client (flowmetal_cli.client) stays on httpx.

A 503 or 507 from the Worker API (the Flow DB locked, or its disk full: api/problems.py) means
nothing was written, so the call is sent again with backoff until it passes or ``patience`` runs
out: a flow that hits a full disk waits for space instead of failing.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from grid_local.api.worker_auth import auth_headers
from grid_local.errors import GridError


# Statuses that say "not now" rather than "never": the API restarting behind a proxy, the Flow DB
# locked (503) or its disk full (507). With no status at all (unreachable), they are transient.
TRANSIENT_STATUSES = frozenset({502, 503, 504, 507})
RETRY_MAX_DELAY = 2.0

T = TypeVar("T")


class WireError(GridError):
    """The Worker API could not be reached, or answered with an error status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """True when the same call may succeed later (the API unreachable, restarting, or busy)."""
        return self.status is None or self.status in TRANSIENT_STATUSES


def until_answered(call: Callable[[], T], who: str = "") -> T:
    """``call()``, retried with backoff (up to 2 s apart) for as long as its failure is transient.

    Workers and connectors keep what they hold in memory while the Worker API restarts under
    them, and carry on when it is back. A permanent refusal (4xx) is raised at once."""
    delay = 0.05
    failing_since: float | None = None
    while True:
        try:
            answer = call()
        except WireError as exc:
            if not exc.transient:
                raise
            if failing_since is None:
                failing_since = time.monotonic()
                print(f"{who or 'wire'}: the Worker API is unavailable ({exc}); retrying until it is back",
                      file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)
            continue
        if failing_since is not None:
            print(f"{who or 'wire'}: the Worker API is back after {time.monotonic() - failing_since:.1f} s",
                  file=sys.stderr, flush=True)
        return answer


UNAVAILABLE = (503, 507)
RETRY_PAUSE_MAX = 2.0


class WireClient:
    def __init__(self, base_url: str, timeout: float = 60.0, patience: float = 600.0) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self.patience = patience
        self._local = threading.local()
        self.auth = auth_headers()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            connection.connect()
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.connection = connection
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._local.connection = None

    def request(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> tuple[int, Any]:
        """Send one request; returns (status, decoded JSON body). Retries once on a stale keep-alive."""
        if params:
            path = f"{path}?{urlencode(params)}"
        payload = None if body is None else json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        if not self.auth:  # a client made before its process was given the grid's credential
            self.auth = auth_headers()
        headers = {**self.auth, "Content-Type": "application/json"} if payload is not None else dict(self.auth)
        for attempt in (1, 2):
            try:
                connection = self._connection()
                connection.request(method, path, body=payload, headers=headers)
                response = connection.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop()
                if attempt == 2:
                    raise WireError(f"{method} {path}: {exc}") from None
            except (OSError, http.client.HTTPException, socket.timeout) as exc:
                self._drop()
                raise WireError(f"{method} {path}: {exc}") from None
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = {"message": raw[:200].decode("utf-8", "replace")}
        return response.status, data

    def call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        """Like request(), but any status >= 400 raises WireError with the API's message (after
        retrying a 503 or 507 for up to ``patience`` seconds)."""
        status, data = self.request(method, path, body, params)
        deadline = time.monotonic() + self.patience
        pause = 0.05
        while status in UNAVAILABLE and time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 2, RETRY_PAUSE_MAX)
            status, data = self.request(method, path, body, params)
        if status >= 400:
            message = data.get("message") if isinstance(data, dict) else data
            raise WireError(f"{method} {path}: {status} {message}", status)
        return data

    def post(self, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        return self.call("POST", path, {} if body is None else body, params)

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.call("GET", path, None, params)

    def get_bytes(self, path: str) -> bytes:
        try:
            connection = self._connection()
            if not self.auth:
                self.auth = auth_headers()
            connection.request("GET", path, headers=self.auth)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise WireError(f"GET {path}: {exc}") from None
        if response.status >= 400:
            raise WireError(f"GET {path}: {response.status}", response.status)
        return raw

    def close(self) -> None:
        self._drop()
