"""Which of a grid's processes one `grid up` starts, and where its Worker API replicas listen.

A whole grid on one machine is the default. A grid spread over machines starts a subset here
(``--only``, ``--no-workers``), serves its Worker API beyond loopback (``--worker-listen``) and
runs several Worker API replicas over the same Flow DB (``--worker-apis``); its workers and
connectors elsewhere are ``flowmetal worker`` and ``flowmetal connector`` processes.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

COMPONENTS = ("client-api", "worker-api", "connectors", "workers")
ALIASES = {"api": ("client-api", "worker-api"), "apis": ("client-api", "worker-api")}
MAX_WORKER_APIS = 16
MIN_TOKEN_CHARS = 16


class LayoutError(ValueError):
    """A combination of options that cannot make a grid (a usage error)."""


def parse_only(text: str) -> frozenset[str]:
    """``--only client-api,worker-api`` (``api`` names both APIs) as the set of components."""
    chosen: set[str] = set()
    for name in (part.strip() for part in text.split(",")):
        if name in ALIASES:
            chosen.update(ALIASES[name])
        elif name in COMPONENTS:
            chosen.add(name)
        else:
            raise LayoutError(f"--only takes {', '.join(COMPONENTS)} or api, not '{name}'")
    return frozenset(chosen)


def parse_listen(text: str, option: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise LayoutError(f"{option} takes HOST:PORT, not '{text}'")
    return host, int(port)


def read_token_file(path: Path) -> str:
    """A Worker API credential from a file (one line); a missing, unreadable or short one is refused."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise LayoutError(f"cannot read the token file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise LayoutError(f"the token file {path} must hold one token of at least {MIN_TOKEN_CHARS} characters "
                          "without spaces")
    return token


@dataclass(frozen=True)
class Layout:
    components: frozenset[str] = field(default_factory=lambda: frozenset(COMPONENTS))
    worker_apis: int = 1
    """Worker API replicas over the one Flow DB; each has its own port, and workers get them all."""
    worker_host: str = "127.0.0.1"
    worker_port: int = 0
    """The first replica's port (0: any free one); replica ``i`` listens on ``worker_port + i``."""
    worker_token_file: Path | None = None
    """The Worker API credential to keep across grid starts (remote workers hold a copy); without
    one, every grid start makes a fresh one."""

    def __post_init__(self) -> None:
        if not 1 <= self.worker_apis <= MAX_WORKER_APIS:
            raise LayoutError(f"--worker-apis takes 1 to {MAX_WORKER_APIS}, not {self.worker_apis}")
        if not self.components:
            raise LayoutError("--only names nothing to start")
        local = self.components & {"connectors", "workers"}
        if local and "worker-api" not in self.components:
            raise LayoutError(f"{' and '.join(sorted(local))} need this grid's worker-api too: on a machine "
                              "without the APIs, run `flowmetal worker --url ...` or `flowmetal connector ...`")
        if self.worker_port and self.worker_port + self.worker_apis - 1 > 65535:
            raise LayoutError(f"--worker-listen port {self.worker_port} leaves no room for {self.worker_apis} replicas")

    def has(self, component: str) -> bool:
        return component in self.components

    @property
    def connect_host(self) -> str:
        """Where this machine's own processes reach the Worker API (loopback for a wildcard bind)."""
        return "127.0.0.1" if self.worker_host in ("0.0.0.0", "::", "") else self.worker_host

    def argv(self) -> list[str]:
        argv = ["--only", ",".join(c for c in COMPONENTS if c in self.components),
                "--worker-apis", str(self.worker_apis), "--worker-host", self.worker_host,
                "--worker-port", str(self.worker_port)]
        if self.worker_token_file is not None:
            argv += ["--worker-token-file", str(self.worker_token_file.resolve())]
        return argv

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--only", default=",".join(COMPONENTS))
        parser.add_argument("--worker-apis", type=int, default=1)
        parser.add_argument("--worker-host", default="127.0.0.1")
        parser.add_argument("--worker-port", type=int, default=0)
        parser.add_argument("--worker-token-file", type=Path, default=None)

    @classmethod
    def from_options(cls, options: argparse.Namespace) -> "Layout":
        return cls(components=parse_only(options.only), worker_apis=options.worker_apis,
                   worker_host=options.worker_host, worker_port=options.worker_port,
                   worker_token_file=options.worker_token_file)
