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
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
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


EXIT_REFUSED = 4
"""How a worker or connector exits when the Worker API refuses its credential (as the CLI's 4)."""


def exit_if_refused(exc: WireError, who: str) -> None:
    """A 401 is final for the whole process: its token is not this grid's (a grid restarted
    with a new one, or the wrong file). Say so in one line and exit; whatever it held moves on
    when its leases expire, and nothing it did after the refusal was written."""
    if exc.status == 401:
        print(f"error: {who}: the Worker API refused this process's credential (401): the token is not this grid's",
              file=sys.stderr, flush=True)
        os._exit(EXIT_REFUSED)


UNAVAILABLE = (503, 507)
RETRY_PAUSE_MAX = 2.0


def split_urls(urls: str | Sequence[str]) -> list[str]:
    """A Worker API URL list as given on a command line (``URL[,URL2,...]``) or as a list."""
    given = urls.split(",") if isinstance(urls, str) else list(urls)
    return [url.strip().rstrip("/") for url in given if url.strip()]


def target(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a Worker API URL (http, or https behind a TLS-terminating proxy)."""
    parts = urlsplit(url)
    scheme = parts.scheme or "http"
    return scheme, parts.hostname or "127.0.0.1", parts.port or (443 if scheme == "https" else 80)


STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class WireClient:
    """Calls one Worker API among several replicas (``base_url``: one URL, a comma-separated list,
    or a sequence), with one keep-alive connection per thread.

    A replica that cannot be reached (refused, reset, timed out) is left for the next one in the
    list within the same call, and later calls stay on the one that answered. Every call the
    Worker API answers is safe to send again to any replica over the same Flow DB: appends are
    conditional on the lease, epoch and sequence number, and one retried after a lost answer gets
    the recorded answer back (CONTRIBUTING.md, invariant 2)."""

    def __init__(self, base_url: str | Sequence[str], timeout: float = 60.0, patience: float = 600.0,
                 who: str = "") -> None:
        self.urls = split_urls(base_url) or ["http://127.0.0.1"]
        self.targets = [target(url) for url in self.urls]
        self.timeout = timeout
        self.patience = patience
        self.who = who
        self._index = 0
        self._index_lock = threading.Lock()
        self._answered = True
        self._local = threading.local()
        self.auth = auth_headers()

    @property
    def url(self) -> str:
        """The replica this client calls now."""
        return self.urls[self._index]

    def _connection(self) -> http.client.HTTPConnection:
        index = self._index
        current = getattr(self._local, "connection", None)
        if current is not None and current[0] != index:  # another thread failed over: follow it
            self._drop()
            current = None
        if current is None:
            scheme, host, port = self.targets[index]
            connection = (http.client.HTTPSConnection(host, port, timeout=self.timeout,
                                                      context=ssl.create_default_context())
                          if scheme == "https" else http.client.HTTPConnection(host, port, timeout=self.timeout))
            connection.connect()
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            current = (index, connection)
            self._local.connection = current
        return current[1]

    def _drop(self) -> None:
        current = getattr(self._local, "connection", None)
        if current is not None:
            current[1].close()
        self._local.connection = None

    def _fail_over(self, failed: int, error: BaseException) -> None:
        """Leave the replica at ``failed`` for the next one (once, whichever thread sees it first)."""
        if len(self.urls) < 2:
            return
        with self._index_lock:
            if self._index != failed:
                return
            self._index = (failed + 1) % len(self.urls)
            answered, self._answered = self._answered, False
        if answered:  # (while none answers, until_answered says so once)
            print(f"{self.who or 'wire'}: the Worker API at {self.urls[failed]} is unreachable ({error}); "
                  f"going on through {self.urls[self._index]}", file=sys.stderr, flush=True)

    def _exchange(self, method: str, path: str, payload: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        """One request and its raw answer, from the first replica that answers (each tried once; a
        stale keep-alive connection is reopened once)."""
        failures = 0
        reopened = False
        while True:
            index = self._index
            try:
                connection = self._connection()
                connection.request(method, path, body=payload, headers=headers)
                response = connection.getresponse()
                answer = response.status, response.read()
                self._answered = True
                return answer
            except STALE as exc:
                self._drop()
                if not reopened:  # the server closed an idle keep-alive connection: reconnect once
                    reopened = True
                    continue
                error: BaseException = exc
            except (OSError, http.client.HTTPException) as exc:  # (socket.timeout is an OSError)
                self._drop()
                error = exc
            failures += 1
            self._fail_over(index, error)
            if failures >= len(self.urls):
                raise WireError(f"{method} {path}: {error}") from None

    def request(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> tuple[int, Any]:
        """Send one request; returns (status, decoded JSON body)."""
        if params:
            path = f"{path}?{urlencode(params)}"
        payload = None if body is None else json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        if not self.auth:  # a client made before its process was given the grid's credential
            self.auth = auth_headers()
        headers = {**self.auth, "Content-Type": "application/json"} if payload is not None else dict(self.auth)
        status, raw = self._exchange(method, path, payload, headers)
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = {"message": raw[:200].decode("utf-8", "replace")}
        return status, data

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
        if not self.auth:
            self.auth = auth_headers()
        status, raw = self._exchange("GET", path, None, dict(self.auth))
        if status >= 400:
            raise WireError(f"GET {path}: {status}", status)
        return raw

    def close(self) -> None:
        self._drop()
