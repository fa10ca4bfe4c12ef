"""In-process wake-ups for long polls, fed by this process's commits and by a Flow DB watcher.

Commits made by this process publish the topics they touched (see FlowStore.notes). Commits made
by other processes are only visible through SQLite's ``PRAGMA data_version``, which the watcher
polls cheaply and turns into a wake-up of every waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Hashable, Iterable, Iterator

from grid_local.db.store import FlowStore


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


async def watch_other_writers(store: FlowStore, notifier: Notifier, interval: float = 0.002) -> None:
    """Wake every waiter when another process commits to the Flow DB."""
    version = await store.data_version()
    while True:
        await asyncio.sleep(interval)
        current = await store.data_version()
        if current != version:
            version = current
            notifier.publish_all()
