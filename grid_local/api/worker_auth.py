"""The Worker API's credential: one per grid, made by the supervisor when the grid starts, handed to
its workers and connectors in their environment, and never to flows (exec strips it).

Every Worker API request but ``/v1/health`` needs ``Authorization: Bearer <token>``. The token is
also in ``worker-api.token`` (mode 0600) in the grid's home, for a worker started by hand; a
worker on another machine is given a copy (``flowmetal worker --token-file``), and a grid whose
workers run elsewhere keeps one across its starts (``grid up --worker-token-file``).
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Any

TOKEN_ENV = "FLOWMETAL_WORKER_TOKEN"
TOKEN_FILE = "worker-api.token"


def new_token(home: Path, given: str | None = None) -> str:
    """The credential of a starting grid (a fresh one, or ``given``: one kept across grid starts
    for workers on other machines), written to the home's token file."""
    token = given or secrets.token_urlsafe(32)
    path = home / TOKEN_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token)
    return token


def worker_token(home: Path | None = None) -> str | None:
    """This process's credential: from the environment, else the token file of ``home`` (or of
    FLOWMETAL_HOME)."""
    given = os.environ.get(TOKEN_ENV)
    if given:
        return given
    where = home or (Path(os.environ["FLOWMETAL_HOME"]) if os.environ.get("FLOWMETAL_HOME") else None)
    try:
        return (where / TOKEN_FILE).read_text().strip() if where else None
    except OSError:
        return None


def auth_headers(home: Path | None = None) -> dict[str, str]:
    token = worker_token(home)
    return {"Authorization": f"Bearer {token}"} if token else {}


class RequireToken:
    """ASGI middleware: refuse (401 JSON) every request without the grid's credential, but health."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/v1/health":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        body = b'{"error":"unauthorized","message":"the Worker API needs this grid\'s credential"}'
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
