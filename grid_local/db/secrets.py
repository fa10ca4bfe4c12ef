"""Secrets: values encrypted at rest in the Flow DB, granted to flows by name, seen only by connectors.

A secret belongs to a quota node. Its value is encrypted with Fernet (``cryptography``) under a key
that is not in the database: ``FLOWMETAL_SECRETS_KEY`` when set, else ``secrets.key`` in the grid's
home (created, mode 0600, on first use).

A flow never holds a value. ``flow(implementation, secrets = {"token": "github-token"})`` grants the
child the secret ``github-token`` as ``fctx.secrets.token``, which is a *reference*: the string
``{{flowmetal.secret:github-token}}``. The grant is checked when the child starts (the secret must
exist at the flow's quota node or an ancestor of it; a child of a child can only narrow what its
parent was granted); a child that declares no secrets inherits its parent's grant. When a connector
claims a request, the Worker API hands it the values of the references in that request that the
flow's grant covers; the connector substitutes them as it performs the action and masks (``***``)
every occurrence of them in the result before it is recorded.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from grid_local import quota_tree as qt
from grid_local.db.engine import Engine, loads
from grid_local.errors import NotFoundError
from grid_local.secret_refs import KEY_ENV, REFERENCE

KEY_FILE = "secrets.key"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
def load_key(home: Path) -> bytes:
    """The grid's secrets key: from the environment, else the home's key file (made on first use)."""
    given = os.environ.get(KEY_ENV)
    if given:
        return given.encode()
    path = home / KEY_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    key = Fernet.generate_key()
    home.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of the grid made it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


class Secrets:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._fernet: Fernet | None = None

    def use_key(self, key: bytes) -> None:
        """The APIs that seal and open values call this once (granting needs no key)."""
        self._fernet = Fernet(key)

    @property
    def fernet(self) -> Fernet:
        if self._fernet is None:
            raise RuntimeError("this process has no secrets key (Secrets.use_key)")
        return self._fernet

    async def put(self, quota: str, name: str, value: str, set_by: str) -> None:
        now = time.time()
        sealed = self.fernet.encrypt(value.encode())
        async with self.engine.transaction():
            await self.engine.execute(
                "INSERT INTO secrets (quota, name, value, set_by, created, updated) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(quota, name) DO UPDATE SET value = excluded.value, set_by = excluded.set_by, "
                "updated = excluded.updated",
                quota, name, sealed, set_by, now, now,
            )

    async def listing(self, quota: str) -> list[dict[str, Any]]:
        """The secrets of the subtree at ``quota``: names, nodes and who set them, never values."""
        rows = await self.engine.all(
            f"SELECT quota, name, set_by, created, updated FROM secrets WHERE {qt.subtree_sql()} ORDER BY quota, name",
            *qt.subtree_params(quota),
        )
        return [dict(r) for r in rows]

    async def remove(self, quota: str, name: str) -> None:
        async with self.engine.transaction():
            if not await self.engine.execute("DELETE FROM secrets WHERE quota = ? AND name = ?", quota, name):
                raise NotFoundError(f"no secret {name} at {quota}")

    async def owner_of(self, quota: str, name: str) -> str | None:
        """The node whose secret ``name`` a flow of ``quota`` uses: the nearest of its ancestry that has one."""
        for node in qt.ancestry(quota):
            if await self.engine.one("SELECT 1 FROM secrets WHERE quota = ? AND name = ?", node, name) is not None:
                return node
        return None

    async def grant_for_child(self, parent: Any, declared: Any) -> tuple[dict[str, str] | None, str]:
        """The grant of a child of ``parent`` (a flows row) declaring ``declared``; (None, why) when refused."""
        parent_grant = (loads(parent["entry"]) or {}).get("secrets") or {}
        if not declared:
            return dict(parent_grant), ""
        if not isinstance(declared, dict):
            return None, "secrets must be a dict of {alias: secret name}"
        is_root = parent["parent"] is None
        for alias, name in declared.items():
            if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
                return None, f"secret {alias!r}: {name!r} is not a secret name"
            if not is_root and name not in parent_grant.values():
                return None, (f"secret {name} was not granted to the calling flow: a child can narrow its "
                              "parent's secrets, never widen them")
            if await self.owner_of(parent["quota"], name) is None:
                return None, f"no secret {name} at quota node {parent['quota']} or above (flowmetal secret set {name})"
        return {str(k): str(v) for k, v in declared.items()}, ""

    async def values_for(self, flow_id: str, args: Any) -> tuple[dict[str, str], str]:
        """The values of the references in a request's ``args`` (by name), or ('', why) when the flow's
        grant does not cover one of them."""
        text = repr(args)
        names = set(REFERENCE.findall(text))
        if not names:
            return {}, ""
        flow = await self.engine.one("SELECT quota, entry FROM flows WHERE id = ?", flow_id)
        granted = set(((loads(flow["entry"]) or {}).get("secrets") or {}).values()) if flow else set()
        values: dict[str, str] = {}
        for name in sorted(names):
            node = await self.owner_of(flow["quota"], name) if flow and name in granted else None
            if node is None:
                return {}, f"secret {name} is not granted to this flow (declare it in flow(..., secrets = {{...}}))"
            row = await self.engine.the("SELECT value FROM secrets WHERE quota = ? AND name = ?", node, name)
            try:
                values[name] = self.fernet.decrypt(bytes(row["value"])).decode()
            except InvalidToken:
                return {}, f"secret {name} cannot be decrypted with this grid's key ({KEY_ENV} or {KEY_FILE})"
        return values, ""
