"""Inboxes: messages to a flow, their delivery to its open ``receive`` (in order, once), and logs.

A flow's ``_stdout`` and ``_stderr`` inboxes are its log: a message there is also a ``log`` event.
"""

from __future__ import annotations

import time
from typing import Any

from grid_local.db.engine import Row, Engine, dumps, loads
from grid_local.db.results import record_once
from grid_local.errors import NotFoundError
from grid_local.runtime import rules

LOG_INBOXES = ("_stdout", "_stderr")


class Inboxes:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def send_message(self, flow_id: str, inbox: str, value: Any, sender: str) -> int:
        """A message from outside the grid (the Client API)."""
        async with self.engine.transaction():
            if await self.engine.one("SELECT status FROM flows WHERE id = ?", flow_id) is None:
                raise NotFoundError(f"no flow {flow_id}")
            message_id = await self.insert_message(flow_id, inbox, value, sender)
            await self.deliver(flow_id, inbox)
            return message_id

    async def send_from_flow(self, sender: Row, args: dict[str, Any]) -> dict[str, Any]:
        """Answer a flow's ``send`` request (inside the append's transaction)."""
        if await self.engine.one("SELECT id FROM flows WHERE id = ?", args["flow_id"]) is None:
            return rules.no_such_flow(args["flow_id"], sender["quota"])
        await self.insert_message(args["flow_id"], rules.inbox_of(args), args.get("value"), sender["id"])
        await self.deliver(args["flow_id"], rules.inbox_of(args))
        return rules.sent()

    async def insert_message(self, flow_id: str, inbox: str, value: Any, sender: str) -> int:
        self.engine.note("inbox")
        row = await self.engine.the(
            "INSERT INTO messages (flow_id, inbox, value, sender, created) VALUES (?, ?, ?, ?, ?) RETURNING id",
            flow_id, inbox, dumps(value), sender, time.time(),
        )
        if inbox in LOG_INBOXES:  # a flow's _stdout and _stderr are its log: writing there is logging
            flow = await self.engine.the("SELECT root, name FROM flows WHERE id = ?", flow_id)
            text = value if isinstance(value, str) else dumps(value)
            self.engine.event(flow_id, flow["root"], "log",
                              {"text": text, "stream": inbox, "name": flow["name"], "sender": sender})
        return int(row["id"])

    async def receive_result(self, flow_id: str, seq: int, inbox: str) -> dict[str, Any] | None:
        """Consume the oldest unread message of an inbox for the receive at ``seq``; None when empty."""
        message = await self.engine.one(
            "SELECT * FROM messages WHERE flow_id = ? AND inbox = ? AND consumed_seq IS NULL ORDER BY id LIMIT 1",
            flow_id, inbox,
        )
        if message is None:
            return None
        await self.engine.execute("UPDATE messages SET consumed_seq = ? WHERE id = ?", seq, message["id"])
        return rules.received(loads(message["value"]))

    async def deliver(self, flow_id: str, inbox: str) -> None:
        """Hand waiting messages to the flow's open receives on that inbox (in order, once)."""
        if self.engine.dialect.lock():  # deliveries to one flow, one at a time (each message to one receive)
            await self.engine.one(f"SELECT id FROM flows WHERE id = ?{self.engine.dialect.lock()}", flow_id)
        for row in await self.engine.all(
            "SELECT seq, args FROM journal WHERE flow_id = ? AND kind = 'receive' AND result IS NULL ORDER BY seq",
            flow_id,
        ):
            if rules.inbox_of(loads(row["args"])) != inbox:
                continue
            result = await self.receive_result(flow_id, row["seq"], inbox)
            if result is None:
                return
            await record_once(self.engine, flow_id, row["seq"], result)

    async def deliver_pending(self) -> int:
        """Match every open receive with waiting messages (the inbox connector's sweep)."""
        pairs = await self.engine.all(
            "SELECT DISTINCT j.flow_id, m.inbox FROM journal j JOIN messages m ON m.flow_id = j.flow_id "
            "WHERE j.kind = 'receive' AND j.result IS NULL AND m.consumed_seq IS NULL"
        )
        if not pairs:
            return 0
        async with self.engine.transaction():
            for row in pairs:
                await self.deliver(row["flow_id"], row["inbox"])
        return len(pairs)
