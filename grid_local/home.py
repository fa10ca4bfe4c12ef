"""Where a local grid keeps its state (``$FLOWMETAL_HOME``, default: the user's data directory), and process helpers."""

from __future__ import annotations

import ctypes
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs


def flowmetal_home() -> Path:
    configured = os.environ.get("FLOWMETAL_HOME")
    return Path(configured).expanduser() if configured else Path(platformdirs.user_data_dir("flowmetal"))


@dataclass(frozen=True)
class GridPaths:
    home: Path
    db_url: str | None = None
    """A ``postgresql://`` URL when the grid's Flow DB is on PostgreSQL (``grid up --db``); None: the
    SQLite file ``db`` in the home."""

    @classmethod
    def current(cls) -> "GridPaths":
        return cls(flowmetal_home())

    @property
    def db(self) -> Path:
        return self.home / "flow.db"

    @property
    def flow_db(self) -> str | Path:
        """What ``FlowStore.open`` opens: the PostgreSQL URL, else the SQLite file."""
        return self.db_url or self.db

    @property
    def flow_db_label(self) -> str:
        """The Flow DB as messages and grid.json name it (a URL without its password)."""
        if self.db_url is None:
            return str(self.db)
        from grid_local.db.postgres import redacted

        return redacted(self.db_url)

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def state(self) -> Path:
        """The running supervisor's description of the grid (pid, URLs, processes)."""
        return self.home / "grid.json"

    @property
    def workspaces(self) -> Path:
        """Scratch directories of workspace resources, one folder per flow."""
        return self.home / "workspaces"

    @property
    def tokens(self) -> Path:
        return self.home / "tokens.toml"

    @property
    def lock(self) -> Path:
        """Held (flock) by the running supervisor for as long as it runs."""
        return self.home / "grid.lock"

    def read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def write_state(self, state: dict[str, Any]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        temporary = self.state.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2))
        temporary.replace(self.state)


def pid_alive(pid: object) -> bool:
    """True when ``pid`` runs (a zombie, exited but not yet reaped, does not count)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def process_identity(pid: int) -> dict[str, Any] | None:
    """What tells this process apart from any later one given the same pid: its start time (clock
    ticks since boot) and its command line. None when it is gone or /proc cannot say."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(") ", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = [part.decode(errors="replace") for part in cmdline.read().split(b"\0") if part]
    except (OSError, IndexError):
        return None
    return {"start": int(fields[19]), "cmdline": argv}


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (from /proc), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(") ", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def lock_holder(path: Path) -> int | None:
    """The pid holding a flock on ``path``, or None (read from /proc/locks: never takes the lock)."""
    try:
        inode = path.stat().st_ino
        with open("/proc/locks") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()  # "1: FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF"
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(inode):
            return int(parts[4]) if parts[4].isdigit() else None
    return None


def is_supervisor_of(paths: GridPaths, state: dict[str, Any]) -> bool:
    """Whether grid.json's pid is still the supervisor that wrote it: alive, the same process (start
    time and command line, so a recycled pid does not count) and holding this home's lock."""
    pid = state.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    identity = process_identity(pid)
    return identity is not None and identity == state.get("identity") and lock_holder(paths.lock) == pid


def die_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGKILL when its parent dies, however the parent dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
