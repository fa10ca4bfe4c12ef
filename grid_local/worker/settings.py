"""How the grid runs flows, set where the grid starts (``flowmetal grid up``) and passed to every worker.

The supervisor turns these into worker command-line options (and the worker's memory cap, an
RLIMIT_AS set when it spawns the process); the worker reads them back with ``from_options``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from grid_local.runtime.limits import GRID_MAXIMA, Limits

MIB = 1024 * 1024
STACK_BYTES_PER_FRAME = 800
"""Native stack a Starlark call frame may take in a flow thread (measured: about 170-400 bytes)."""
BASE_ADDRESS_SPACE_MIB = 1024
"""What a worker maps before any flow runs (interpreter, libraries, allocator arenas), with room."""


@dataclass(frozen=True)
class WorkerSettings:
    slots: int = 64
    """Flows a worker evaluates at once. A flow waiting for a result (a child, a sleep, an HTTP
    call) gives its slot back while it waits."""
    max_waiting: int = 256
    """Flows a worker keeps in memory while they wait; beyond this a flow that starts to wait is
    suspended at once (released to the Flow DB, and replayed when its result is in)."""
    memory_mib: int = 2048
    """Memory for flow data in each worker process (the address-space cap adds thread stacks and
    the worker's own base on top). A flow that needs more fails with an out-of-memory error."""
    max_eval_budget: float = GRID_MAXIMA.eval_budget
    max_callstack: int = GRID_MAXIMA.max_callstack
    max_suspend_after: float = GRID_MAXIMA.suspend_after

    @property
    def maxima(self) -> Limits:
        """The grid's maxima: a bundle's [limits] can lower these, never raise them."""
        return Limits(eval_budget=self.max_eval_budget, max_callstack=self.max_callstack,
                      suspend_after=self.max_suspend_after, memory_mib=self.memory_mib)

    @property
    def stack_bytes(self) -> int:
        """The stack of each flow thread: deep enough for two evaluations of ``max_callstack`` frames
        (a parent and the child it evaluates in its own thread while it waits on it), 8 MiB at least."""
        wanted = max(8 * MIB, 2 * self.max_callstack * STACK_BYTES_PER_FRAME)
        return -(-wanted // MIB) * MIB

    @property
    def threads(self) -> int:
        return self.slots + self.max_waiting

    @property
    def address_space_bytes(self) -> int:
        """The worker's RLIMIT_AS: flow memory, plus every flow thread's stack, plus the worker's base."""
        return (self.memory_mib + BASE_ADDRESS_SPACE_MIB) * MIB + (self.threads + 8) * self.stack_bytes

    def argv(self) -> list[str]:
        return ["--slots", str(self.slots), "--max-waiting", str(self.max_waiting),
                "--memory", str(self.memory_mib), "--max-eval-budget", f"{self.max_eval_budget:g}",
                "--max-callstack", str(self.max_callstack), "--max-suspend-after", f"{self.max_suspend_after:g}"]

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        defaults = WorkerSettings()
        parser.add_argument("--slots", type=_positive(int), default=defaults.slots)
        parser.add_argument("--max-waiting", type=_positive(int), default=defaults.max_waiting)
        parser.add_argument("--memory", type=_positive(int), default=defaults.memory_mib, help="MiB per worker")
        parser.add_argument("--max-eval-budget", type=_positive(float), default=defaults.max_eval_budget)
        parser.add_argument("--max-callstack", type=_positive(int), default=defaults.max_callstack)
        parser.add_argument("--max-suspend-after", type=_positive(float), default=defaults.max_suspend_after)

    @classmethod
    def from_options(cls, options: argparse.Namespace) -> "WorkerSettings":
        return cls(slots=options.slots, max_waiting=options.max_waiting, memory_mib=options.memory,
                   max_eval_budget=options.max_eval_budget, max_callstack=options.max_callstack,
                   max_suspend_after=options.max_suspend_after)


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
        return value
    parse.__name__ = getattr(kind, "__name__", "number")
    return parse
