"""How much a flow's evaluation grew its worker's memory, measured from inside the flow's own thread.

starlark-pyo3 gives no count of what an evaluation allocates, a process's resident memory is not
kept per thread, and the evaluator drops the GIL at times of its own, so neither "who held the
GIL" nor the process's resident size alone says which flow grew the worker. Two counts together
do, on Linux:

- the page faults of the flow's thread since its evaluation began (``getrusage(RUSAGE_THREAD)``):
  every page of memory the thread touched for the first time, whichever flow's thread it is; this
  never counts another flow's pages, but counts a page again when it was freed to the kernel and
  touched anew (a list that grows by copies);
- the worker's peak resident size (``getrusage`` ``ru_maxrss``, or the resident size now if higher)
  against its resident size when the evaluation began (``/proc/self/statm``): how high the process
  went above where it was, which never counts a page twice and never comes down when another flow
  frees memory (the resident size now would: another flow ending while this one grows would hide
  its growth), but includes other flows' growth and an earlier peak of the worker.

A flow is charged the smaller of the two: never more than its own thread touched, never more than
the worker rose above where it was. What can still be wrong: a flow that frees memory to the kernel
and touches it again (large action results, one after another) is charged each time, up to how far
its worker ever rose (it can be charged more than it holds when that worker peaked higher before);
memory the allocator kept from earlier flows and hands out again without the kernel shows in
neither (it is not growth of the worker); and an allocation is seen at the next
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


def peak_resident() -> int:
    """The worker's highest resident memory so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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
        """Bytes charged so far: the smaller of the pages its thread touched and how far the worker rose."""
        if self._faults is None:
            return 0
        touched = (thread_faults() - self._faults) * PAGE
        rose = max(peak_resident(), resident()) - self._resident
        return max(0, min(touched, rose))
