"""Every process an ``exec`` started, found again and killed: no process outlives its command or its flow.

A workspace command runs in its own session and process group, with ``FLOWMETAL_EXEC`` set to
``<grid>:<flow>:<seq>`` in its environment. Everything it starts inherits that mark, even a
process that leaves the group (``setsid``, a daemon's double fork) or the folder. The mark is what
is killed: that exec's when the command ends, a flow's when its resources close (the flow ended,
however), the grid's when the resources connector stops or starts again after a crash.

A process that clears its own environment and leaves the session has no mark: unsandboxed, the
resources connector is its subreaper and kills it (``orphans.py``); sandboxed, its pid namespace
ends with the command.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

MARK_ENV = "FLOWMETAL_EXEC"
_PROC = Path("/proc")


def mark(grid: str, flow_id: str, seq: int) -> str:
    return f"{grid}:{flow_id}:{seq}"


def _mark_of(pid: int) -> str | None:
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    prefix = (MARK_ENV + "=").encode()
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode(errors="replace")
    return None


def kill_marked(prefix: str) -> int:
    """SIGKILL every process whose mark is ``prefix`` or starts with ``prefix + ':'``; how many."""
    me = os.getpid()
    killed = 0
    for _ in range(3):  # a process may fork while we scan: look again until a scan finds none
        found = 0
        for entry in _PROC.iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            value = _mark_of(int(entry.name))
            if value is not None and (value == prefix or value.startswith(prefix + ":")):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), signal.SIGKILL)
                    found += 1
        killed += found
        if not found:
            break
    return killed


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
