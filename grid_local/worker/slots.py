"""A worker's evaluation slots: a flow holds one while it evaluates and gives it back while it waits.

A flow waiting on a child flow (or a sleep, or an HTTP call) must never keep that child from
running: so waiting flows do not count against the slots the worker claims new flows into. They
stay in memory (the fast path: no replay when the result comes quickly), up to ``max_waiting``
per worker; past that, a flow that starts to wait is suspended at once, which bounds a worker's
memory. A flow whose result arrived takes a slot back before it evaluates on, ahead of new claims.
"""

from __future__ import annotations

import threading


class Slots:
    def __init__(self, capacity: int, max_waiting: int) -> None:
        self.capacity = capacity
        self.max_waiting = max_waiting
        self.evaluating = 0
        self.waiting = 0
        self.queued = 0
        """Flows whose result arrived, waiting for a slot to evaluate on."""
        self._changed = threading.Condition()

    def free(self) -> int:
        """How many more flows the worker may claim now (flows queued for a slot come first)."""
        with self._changed:
            return self.capacity - self.evaluating - self.queued

    def wait_until_free(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.capacity - self.evaluating - self.queued > 0, timeout)

    def take(self) -> None:
        """A claimed flow starts evaluating (the claim asked for no more than ``free()``)."""
        with self._changed:
            self.evaluating += 1

    def try_take(self) -> bool:
        """Take a slot if one is free now (for a child flow the parent's ``run`` may hand over)."""
        with self._changed:
            if self.capacity - self.evaluating - self.queued <= 0:
                return False
            self.evaluating += 1
            return True

    def give_back(self) -> None:
        """A flow left the worker (finished, failed, suspended or lost)."""
        with self._changed:
            self.evaluating -= 1
            self._changed.notify_all()

    def start_waiting(self) -> bool:
        """A flow is about to wait for a result: it gives its slot back. False when the worker already
        keeps ``max_waiting`` waiting flows: the flow keeps its slot and should suspend instead."""
        with self._changed:
            if self.waiting + self.queued >= self.max_waiting:
                return False
            self.evaluating -= 1
            self.waiting += 1
            self._changed.notify_all()
            return True

    def stop_waiting(self, evaluate_on: bool = True) -> None:
        """The wait is over: block until a slot is free, then hold it again. A flow that will not
        evaluate on (it suspends, or was lost) takes its slot back at once, only to give it back."""
        with self._changed:
            self.waiting -= 1
            if evaluate_on:
                self.queued += 1
                self._changed.wait_for(lambda: self.evaluating < self.capacity)
                self.queued -= 1
            self.evaluating += 1

    def counts(self) -> dict[str, int]:
        with self._changed:
            return {"evaluating": self.evaluating, "waiting": self.waiting, "queued": self.queued}
