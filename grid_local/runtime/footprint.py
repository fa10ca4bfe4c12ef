"""How much a flow's evaluation grew its worker's memory, measured from inside the flow's own thread.

starlark-pyo3 gives no count of what an evaluation allocates, a process's resident memory is not
kept per thread, and the evaluator drops the GIL at times of its own, so neither "who held the
GIL" nor the process's resident size alone says which flow grew the worker. Two counts together
do, on Linux:

- the page faults of the flow's thread since its evaluation began (``getrusage(RUSAGE_THREAD)``):
  every page of memory the thread touched for the first time, whichever flow's thread it is; this
  never counts another flow's pages, but counts a page again when it was freed to the kernel and
  touched anew (a list that grows by copies);
- the worker's resident size now against when the evaluation began (``/proc/self/statm``): what
  the process really grew by, which never counts a page twice, but counts other flows' growth too.

A flow is charged the smaller of the two: never more than its own thread touched, never more than
the worker grew by. Memory the allocator kept from earlier flows and hands out again without the
kernel shows in neither (it is not growth of the worker), and an allocation is seen at the next
check after it (the evaluator's cancellation check, every few hundred steps, an action, or the end
of a module), so one statement can go past a cap before the flow is stopped: the worker's own cap
(an RLIMIT_AS, ``grid up --worker-memory``) stays the bound no flow passes.
"""

from __future__ import annotations

import os
import resource

PAGE = os.sysconf("SC_PAGE_SIZE")
_THREAD = getattr(resource, "RUSAGE_THREAD", None)


def _open_statm() -> int | None:
    try:
        return os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:
        return None


_STATM = _open_statm()
AVAILABLE = _THREAD is not None and _STATM is not None
"""Whether this system gives both counts (Linux does); elsewhere no flow is charged anything."""


def resident() -> int:
    """The worker's resident memory, in bytes."""
    assert _STATM is not None
    return int(os.pread(_STATM, 64, 0).split()[1]) * PAGE


def thread_faults() -> int:
    """Page faults of the calling thread so far (minor and major)."""
    assert _THREAD is not None
    usage = resource.getrusage(_THREAD)
    return usage.ru_minflt + usage.ru_majflt


class Footprint:
    """One evaluation's growth of its worker's memory, from ``start`` in the thread that evaluates it."""

    __slots__ = ("_faults", "_resident")

    def __init__(self) -> None:
        self._faults: int | None = None
        self._resident = 0

    def start(self) -> None:
        if AVAILABLE:
            self._faults, self._resident = thread_faults(), resident()

    def grown(self) -> int:
        """Bytes charged so far: the smaller of the pages its thread touched and the worker's growth."""
        if self._faults is None:
            return 0
        touched = (thread_faults() - self._faults) * PAGE
        return max(0, min(touched, resident() - self._resident))
