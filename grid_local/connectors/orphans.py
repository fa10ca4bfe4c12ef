"""The resources connector as the subreaper of the commands it runs unsandboxed.

A process a command leaves behind is killed by its mark (``exec_marks``) and its process group. One
that clears its environment (no mark) and leaves the session (``env -i setsid -f``) escapes both;
but when its parent exits it is reparented to the nearest subreaper, which is this connector
(``PR_SET_CHILD_SUBREAPER``) rather than init. Such a leftover is killed as soon as every command
that could have started it has ended: every command that was running when it started (a process is
never older than the command it descends from). The connector also reaps what it inherits, and
kills every process it inherited when it stops.

Not covered: a leftover of a connector that was SIGKILLed (it goes to init; its marked processes are
still killed by the next incarnation).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time in clock ticks since boot) of a process, or None when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


class Orphans:
    def __init__(self) -> None:
        self.me = os.getpid()
        self.lock = threading.Lock()
        self.running: dict[int, int] = {}
        """The commands this connector runs now: pid -> start time (ticks)."""
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.enabled = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0

    def spawn(self, start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        """Start a command (``start`` makes the Popen) and count it as running, in one step: the
        sweep never takes a command of ours for a leftover."""
        with self.lock:
            process = start()
            found = _stat(process.pid)
            self.running[process.pid] = found[2] if found else 0
        return process

    def ended(self, pid: int) -> None:
        """The command was waited for (its Popen reaped it): what it left can now be swept."""
        with self.lock:
            self.running.pop(pid, None)
        self.sweep()

    def _children(self) -> list[tuple[int, str, int]]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                stat = _stat(int(entry.name))
                if stat is not None and stat[0] == self.me:
                    found.append((int(entry.name), stat[1], stat[2]))
        return found

    def sweep(self) -> int:
        """Reap the leftovers that ended; kill those no running command can have started. How many
        were killed."""
        if not self.enabled:
            return 0
        killed = 0
        with self.lock:
            for pid, state, started in self._children():
                if pid in self.running:
                    continue
                if state == "Z":
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
                    continue
                if any(since <= started for since in self.running.values()):
                    continue  # a command still running may have started it
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
        return killed

    def kill_all(self) -> None:
        """The connector stops: every process it runs or inherited."""
        for pid, _, _ in self._children():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
