"""How far a grid isolates its tenants: whether it is shared, whether ``exec`` runs in a sandbox,
and which non-public networks the ``http`` action may reach.

A grid is *shared* when it listens beyond loopback or has a tokens file: then workspace commands
run under bubblewrap (``connectors/sandbox.py``) and ``http`` refuses loopback, link-local and
private addresses unless the allow list covers them (``connectors/egress.py``). A local
single-user grid runs commands as its user and lets ``http`` reach loopback (local development
calls local services), unless ``--sandbox exec`` asks for the sandbox there too. The supervisor
decides once and hands the decision to the connectors on their command line.
"""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SANDBOX_CHOICES = ("auto", "exec")


def parse_networks(text: str) -> tuple[Network, ...]:
    """``CIDR,CIDR,...`` (a bare address is a /32 or /128); ValueError naming the bad item."""
    networks: list[Network] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"--http-allow takes CIDR ranges separated by commas (10.0.0.0/8,fd00::/8), "
                             f"not '{item}'") from None
    return tuple(networks)


def is_loopback_host(host: str) -> bool:
    """Whether an API bound to ``host`` is reachable from this machine only ("" and 0.0.0.0 are not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Isolation:
    shared: bool = False
    """Listening beyond loopback, or serving tokens: more than one person's flows may run here."""
    sandbox: bool = False
    """Workspace commands run under bubblewrap (always on a shared grid)."""
    http_allow: tuple[Network, ...] = ()
    """Non-public networks a shared grid's ``http`` action may still reach (the grid's own APIs never)."""

    @classmethod
    def for_grid(cls, host: str, tokens: bool, sandbox: str = "auto", http_allow: str = "") -> "Isolation":
        shared = tokens or not is_loopback_host(host)
        if sandbox not in SANDBOX_CHOICES:
            raise ValueError(f"--sandbox takes {' or '.join(SANDBOX_CHOICES)}, not '{sandbox}'")
        return cls(shared=shared, sandbox=shared or sandbox == "exec", http_allow=parse_networks(http_allow))

    def argv(self) -> list[str]:
        """The connectors' command-line form of this decision."""
        argv = ["--shared"] if self.shared else []
        if self.sandbox:
            argv += ["--sandbox", "exec"]
        if self.http_allow:
            argv += ["--http-allow", ",".join(str(n) for n in self.http_allow)]
        return argv

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--shared", action="store_true", help="a shared grid (decided by the supervisor)")
        parser.add_argument("--sandbox", choices=SANDBOX_CHOICES, default="auto")
        parser.add_argument("--http-allow", default="", help="CIDR,... a shared grid's http may reach")

    @classmethod
    def from_options(cls, options: argparse.Namespace) -> "Isolation":
        return cls(shared=options.shared, sandbox=options.shared or options.sandbox == "exec",
                   http_allow=parse_networks(options.http_allow))

    @classmethod
    def from_grid(cls, described: dict[str, Any], options: argparse.Namespace | None = None) -> "Isolation":
        """The grid's policy, as its Worker API describes it (``GET /v1/connectors/policy``); a
        connector's own flags can only make it stricter (shared, sandboxed), never open more networks."""
        flags = cls.from_options(options) if options is not None else cls()
        shared = bool(described.get("shared")) or flags.shared
        return cls(shared=shared, sandbox=described.get("sandbox") == "exec" or shared or flags.sandbox,
                   http_allow=parse_networks(",".join(described.get("http_allow") or [])))

    def describe(self) -> dict[str, Any]:
        """For grid.json and ``grid status``."""
        return {"shared": self.shared, "sandbox": "exec" if self.sandbox else "none",
                "http_allow": [str(n) for n in self.http_allow]}
