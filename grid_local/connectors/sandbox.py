"""Workspace commands under bubblewrap (``bwrap``, Debian's ``bubblewrap``): what a sandboxed command sees.

A sandboxed command sees:

- its own workspace, read-write, at the path its handle names (and nothing else of the grid's
  home: not the Flow DB, not ``secrets.key``, not ``worker-api.token``, not another workspace);
- the system's tools read-only: ``/usr``, ``/etc`` (without ``shadow``/``gshadow``) and the
  top-level ``/bin``, ``/sbin``, ``/lib*`` (links or folders, as the system has them);
- a private, empty ``/tmp``, its own ``/proc`` and a minimal ``/dev``;
- no network but its own loopback (a command could otherwise reach what the ``http`` action's
  egress policy refuses);
- an environment of its own: ``PATH``, ``HOME`` (the workspace), the locale, what the action's
  ``env`` gives, and the exec mark; nothing of the grid's (no ``FLOWMETAL_*``).

It runs in new user, pid, ipc, uts and network namespaces, in a session of its own, with every
capability dropped. Its pid namespace dies with it: when the command ends (or bwrap is killed),
every process it left behind is killed by the kernel, however it detached itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

BWRAP = "bwrap"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READ_ONLY = ("/usr", "/etc")
TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
MASKED = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")
KEPT_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM")


class SandboxUnavailable(RuntimeError):
    """bwrap is missing or cannot make its namespaces here."""


def _system_mounts() -> list[str]:
    args: list[str] = []
    for path in READ_ONLY:
        if os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in TOP_LEVEL:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in MASKED:
        if os.path.exists(path):
            args += ["--ro-bind", "/dev/null", path]
    return args


def _hidden(paths: Iterable[Path]) -> list[str]:
    """An empty tmpfs over each grid path that a read-only system folder would otherwise show."""
    args: list[str] = []
    for path in paths:
        resolved = str(path.resolve())
        if any(resolved == root or resolved.startswith(root.rstrip("/") + "/") for root in (*READ_ONLY, *TOP_LEVEL)):
            args += ["--tmpfs", resolved]
    return args


class Sandbox:
    """Builds the bwrap command line for one workspace command."""

    def __init__(self, hide: Iterable[Path]) -> None:
        self.hide = list(hide)
        self.bwrap = shutil.which(BWRAP) or BWRAP

    def base(self) -> list[str]:
        return [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                *_system_mounts(), "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", *_hidden(self.hide)]

    def command(self, workspace: Path, argv: list[str]) -> list[str]:
        folder = str(workspace.resolve())
        return [*self.base(), "--bind", folder, folder, "--chdir", folder, "--", *argv]

    @staticmethod
    def environment(workspace: Path, given: dict[str, str], outer: dict[str, str]) -> dict[str, str]:
        """The command's whole environment (bwrap hands on its own): nothing of the grid's but the locale."""
        env = {key: outer[key] for key in KEPT_ENV if key in outer}
        env.update({"PATH": SYSTEM_PATH, "HOME": str(workspace.resolve())})
        env.update(given)
        return env

    @staticmethod
    def not_found(returncode: int | None, stderr: bytes) -> bool:
        """Whether bwrap itself reported that the command does not exist."""
        return returncode == 1 and stderr.startswith(b"bwrap: execvp ")

    def check(self) -> None:
        """SandboxUnavailable, with bwrap's reason, when a sandboxed command cannot run here."""
        try:
            done = subprocess.run([*self.base(), "--", "true"], capture_output=True, timeout=30,
                                  env={"PATH": SYSTEM_PATH})
        except FileNotFoundError:
            raise SandboxUnavailable(
                "exec runs sandboxed on this grid and bwrap is not installed "
                "(apt-get install bubblewrap)") from None
        except subprocess.TimeoutExpired:
            raise SandboxUnavailable("exec runs sandboxed on this grid and bwrap did not start within 30 s") from None
        if done.returncode != 0:
            reason = done.stderr.decode(errors="replace").strip().splitlines()
            raise SandboxUnavailable("exec runs sandboxed on this grid and bwrap cannot run here: "
                                     f"{reason[-1] if reason else f'exit code {done.returncode}'} "
                                     "(it needs user namespaces: sysctl kernel.unprivileged_userns_clone=1)")


def check_available() -> None:
    Sandbox(()).check()
