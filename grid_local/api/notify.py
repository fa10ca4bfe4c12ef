"""In-process wake-ups for long polls, fed by this process's commits and by a Flow DB watcher.

Commits made by this process publish the topics they touched (see FlowStore.notes). Commits made
by other processes reach the watcher through the engine: on SQLite only as a change of ``PRAGMA
data_version``, which it polls cheaply and turns into a wake-up of every waiter; on PostgreSQL as a
NOTIFY listing the topics, which it receives with LISTEN.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator
from typing import Any, TypeVar

from grid_local.db.store import FlowStore

T = TypeVar("T")


class Notifier:
    def __init__(self) -> None:
        self._waiters: dict[Hashable, set[asyncio.Future[None]]] = defaultdict(set)

    def publish(self, topics: Iterable[Hashable]) -> None:
        for topic in topics:
            for future in self._waiters.pop(topic, ()):
                if not future.done():
                    future.set_result(None)

    def publish_all(self) -> None:
        self.publish(list(self._waiters))

    @contextlib.contextmanager
    def subscribe(self, *topics: Hashable) -> Iterator[asyncio.Future[None]]:
        """Subscribe *before* checking state, then await the future: no wake-up can be missed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for topic in topics:
            self._waiters[topic].add(future)
        try:
            yield future
        finally:
            for topic in topics:
                waiters = self._waiters.get(topic)
                if waiters is not None:
                    waiters.discard(future)
                    if not waiters:
                        del self._waiters[topic]


async def wait_for(future: asyncio.Future[None], timeout: float) -> bool:
    """True when woken, False on timeout."""
    try:
        await asyncio.wait_for(asyncio.shield(future), timeout)
        return True
    except asyncio.TimeoutError:
        return False


async def long_poll(
    notifier: Notifier, topics: Iterable[Hashable], wait: float,
    check: Callable[[], Awaitable[T]], ready: Callable[[T], bool],
) -> T:
    """Re-run ``check`` each time one of ``topics`` is published, until ``ready`` says its answer
    will do or ``wait`` seconds pass; returns the last answer."""
    deadline = time.monotonic() + wait
    topics = tuple(topics)
    while True:
        with notifier.subscribe(*topics) as woken:
            answer = await check()
            remaining = deadline - time.monotonic()
            if ready(answer) or remaining <= 0:
                return answer
            await wait_for(woken, remaining)


async def watch_other_writers(store: FlowStore, notifier: Notifier) -> None:
    """Wake the waiters when another process commits to the Flow DB (the safety net under PeerPoke):
    on SQLite every waiter (``PRAGMA data_version`` tells only that something changed); on
    PostgreSQL those of the topics the commit touched, which its NOTIFY lists (``LISTEN``), from
    any process on any machine."""
    def woken(notes: set[tuple[Any, ...]] | None) -> None:
        if notes is None:
            notifier.publish_all()
        else:
            notifier.publish([*notes, ANY_CHANGE, ("commit",)])  # ("commit",): any change at all

    await store.engine.watch_commits(woken)


# Every poke also wakes this topic: event streams follow any change at all.
ANY_CHANGE = "events"


class _PokeProtocol(asyncio.DatagramProtocol):
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            topics = [tuple(topic) for topic in json.loads(data)]
        except (ValueError, TypeError):
            self.notifier.publish_all()
            return
        self.notifier.publish([*topics, ANY_CHANGE])


class PeerPoke:
    """Cross-process wake-ups without polling: a UDP datagram on loopback after each commit, listing
    the topics the commit touched, so that only the waiters concerned wake up.

    The APIs poke each other (the Client API's commits wake the Worker API replicas' claimers; a
    Worker API's wake the Client API's event streams and the other replicas' long polls). A lost
    datagram only costs latency: the ``data_version`` watcher still runs, more slowly, as the
    safety net.
    """

    def __init__(self, notifier: Notifier, listen_port: int | None, peer_ports: int | list[int] | None) -> None:
        self.notifier = notifier
        self.listen_port = listen_port
        ports = [peer_ports] if isinstance(peer_ports, int) else peer_ports or []
        self.peers = [("127.0.0.1", port) for port in ports if port]
        self.transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.listen_port:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _PokeProtocol(self.notifier), local_addr=("127.0.0.1", self.listen_port)
            )
        else:
            transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        self.transport = transport  # type: ignore[assignment]

    def poke(self, notes: set[tuple[Any, ...]]) -> None:
        """Tell the peers what this commit changed (the topics their waiters subscribe to)."""
        if self.transport is not None and self.peers:
            payload = json.dumps(sorted(list(note) for note in notes)).encode()
            if len(payload) > 60000:  # too many to list in one datagram: wake everything
                payload = b"!"
            for peer in self.peers:
                self.transport.sendto(payload, peer)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
