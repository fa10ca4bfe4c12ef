"""The ``http`` action's egress policy, enforced where connections are made (an httpx transport).

For every request, and again for every redirect hop (httpx sends each hop through the transport):

1. the host is resolved once, and every address it resolves to is checked;
2. the grid's own APIs (its Worker API and Client API ports on an address of this machine) are
   always refused;
3. on a shared grid, loopback, link-local, private and other non-public addresses are refused
   unless one of the grid's ``--http-allow`` networks covers them;
4. the connection goes to an address that was checked, never to a name resolved again (a DNS
   answer that changes between check and connect cannot move the request): the URL's host is
   replaced by that address, the ``Host`` header and the TLS server name keep the original name.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

from grid_local.api.wire import split_urls
from grid_local.home import GridPaths
from grid_local.isolation import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class Refused(httpx.TransportError):
    """The policy refused a request or a redirect hop (its message is the action's error)."""


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]).split("%")[0] for info in infos]


def _plain(address: Address) -> Address:
    """An IPv4-mapped IPv6 address (::ffff:127.0.0.1) is judged as the IPv4 address it maps."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def non_public_kind(address: Address) -> str | None:
    """What makes an address non-public ("loopback", "link-local", ...), or None for a public one."""
    address = _plain(address)
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_private or not address.is_global:
        return "private"
    return None


class OwnApis:
    """The grid's own endpoints: its Worker API and Client API ports on any address of this machine."""

    def __init__(self, worker_urls: str, home: Path | None) -> None:
        self.worker_ports = {port for port in (httpx.URL(url).port for url in split_urls(worker_urls)) if port}
        self.paths = GridPaths(home) if home else None

    def ports(self) -> set[int]:
        ports = set(self.worker_ports)
        state = self.paths.read_state() if self.paths else None
        for url in [(state or {}).get("url"), *((state or {}).get("worker_urls") or [])]:
            port = httpx.URL(str(url or "http://x")).port
            if port:
                ports.add(port)
        return ports

    def covers(self, address: Address, port: int) -> bool:
        if port not in self.ports():
            return False
        address = _plain(address)
        return address.is_loopback or address.is_unspecified or str(address) in _local_addresses()


def _local_addresses() -> set[str]:
    try:
        return set(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        return set()


class EgressPolicy:
    def __init__(self, own: OwnApis, shared: bool, allow: Iterable[Network] = (),
                 resolve: Resolver = system_resolver) -> None:
        self.own = own
        self.shared = shared
        self.allow = tuple(allow)
        self.resolve = resolve

    def addresses(self, host: str, port: int) -> list[Address]:
        """The checked addresses of ``host`` (all of them pass), in the resolver's order; Refused or
        httpx.ConnectError (it does not resolve) otherwise."""
        try:
            found = [ipaddress.ip_address(host.strip("[]"))]
            literal = True
        except ValueError:
            literal = False
            try:
                found = [ipaddress.ip_address(a) for a in self.resolve(host, port)]
            except (OSError, ValueError) as exc:
                raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from None
            if not found:
                raise httpx.ConnectError(f"cannot resolve {host}: no address")
        for address in found:
            where = f"{host}:{port}" if literal else f"{host}:{port} ({address})"
            if self.own.covers(address, port):
                raise Refused(f"http: refused: {host}:{port} is this grid's own API "
                              "(flows never call the grid's internal endpoints)")
            kind = non_public_kind(address)
            if self.shared and kind and not any(_plain(address) in network or address in network
                                                for network in self.allow):
                raise Refused(f"http: refused: {where} is a {kind} address: a shared grid reaches "
                              "loopback, link-local and private addresses only where its --http-allow says")
        return found


class PolicyTransport(httpx.BaseTransport):
    """Checks each request (each redirect hop) against the policy, then connects to a checked address."""

    def __init__(self, policy: EgressPolicy, inner: httpx.BaseTransport | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = self.policy.addresses(url.host, port)
        if len(addresses) == 1 and str(addresses[0]) == url.host.strip("[]"):
            return self.inner.handle_request(request)  # an address already: nothing to pin
        failure: httpx.ConnectError | None = None
        for address in addresses:  # as a resolver's caller would: the next address when one refuses
            # A request of its own, so the client's request (redirects are resolved against its
            # URL) keeps the name; the Host header and the TLS server name keep it too.
            pinned = httpx.Request(request.method, url.copy_with(host=str(address)), headers=request.headers,
                                   stream=request.stream,
                                   extensions={**request.extensions, "sni_hostname": url.host})
            try:
                return self.inner.handle_request(pinned)
            except httpx.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure

    def close(self) -> None:
        self.inner.close()
