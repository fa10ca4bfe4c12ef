"""The http action's egress policy (connectors/egress.py), with real servers on loopback addresses:
which addresses a shared grid refuses, what an allow list opens, the grid's own APIs always refused,
and a name resolved once: the connection goes to the address that was checked."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from grid_local.connectors.egress import EgressPolicy, OwnApis, PolicyTransport, Refused
from grid_local.isolation import Isolation, parse_networks
from tests.helpers import LoopbackServer, QuietJsonHandler


class Which(QuietJsonHandler):
    """Answers which server it is and the Host header it got; /hop redirects to ?to=."""

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/hop?to="):
            self.send_response(302)
            self.send_header("location", self.path.split("=", 1)[1])
            self.send_header("content-length", "0")
            self.end_headers()
            return
        self.send_json(200, {"server": self.server.server_address[0], "host": self.headers.get("host")})


@pytest.fixture
def servers() -> Iterator[tuple[LoopbackServer, LoopbackServer]]:
    """Two servers on one port: 127.0.0.2 (allowed in these tests) and 127.0.0.1 (refused)."""
    allowed = LoopbackServer(Which, host="127.0.0.2")
    refused = LoopbackServer(Which, host="127.0.0.1", port=allowed.port)
    try:
        yield allowed, refused
    finally:
        allowed.close()
        refused.close()


def client(shared: bool, allow: str = "", resolve: object = None, own_port: int = 1) -> httpx.Client:
    own = OwnApis(f"http://127.0.0.1:{own_port}", None)
    policy = EgressPolicy(own, shared=shared, allow=parse_networks(allow),
                          **({"resolve": resolve} if resolve else {}))  # type: ignore[arg-type]
    return httpx.Client(transport=PolicyTransport(policy), follow_redirects=True, timeout=10)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.9.9.9", "::1", "169.254.169.254", "fe80::1", "10.1.2.3",
                                     "172.16.0.1", "172.31.255.255", "192.168.1.1", "fc00::1", "fd12::1",
                                     "0.0.0.0", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "100.64.0.1"])
def test_a_shared_grid_refuses_non_public_addresses(address: str) -> None:
    policy = EgressPolicy(OwnApis("http://127.0.0.1:1", None), shared=True)
    with pytest.raises(Refused, match="a shared grid reaches loopback, link-local and private addresses only"):
        policy.addresses(address, 80)
    EgressPolicy(OwnApis("http://127.0.0.1:1", None), shared=False).addresses(address, 80)  # a local grid: fine


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "172.32.0.1", "11.0.0.1"])
def test_public_addresses_pass(address: str) -> None:
    found = EgressPolicy(OwnApis("http://127.0.0.1:1", None), shared=True).addresses(address, 443)
    assert found == [ipaddress.ip_address(address)]


def test_an_allow_list_opens_exactly_its_networks() -> None:
    policy = EgressPolicy(OwnApis("http://127.0.0.1:1", None), shared=True, allow=parse_networks("10.1.0.0/16,fd00::/8"))
    assert policy.addresses("10.1.200.3", 80) and policy.addresses("fd00::5", 80)
    assert policy.addresses("::ffff:10.1.0.1", 80)  # a mapped address is the address it maps
    for refused in ("10.2.0.1", "192.168.0.1", "fc00::1"):
        with pytest.raises(Refused):
            policy.addresses(refused, 80)


def test_a_name_is_refused_when_any_of_its_addresses_is() -> None:
    policy = EgressPolicy(OwnApis("http://127.0.0.1:1", None), shared=True,
                          resolve=lambda host, port: ["93.184.216.34", "10.0.0.7"])
    with pytest.raises(Refused, match=r"http: refused: mixed.test:80 \(10.0.0.7\) is a private address"):
        policy.addresses("mixed.test", 80)


def test_the_grids_own_apis_are_refused_even_when_allowed(tmp_path: Path) -> None:
    policy = EgressPolicy(OwnApis("http://127.0.0.1:8123", tmp_path), shared=True, allow=parse_networks("127.0.0.0/8"))
    for host in ("127.0.0.1", "127.0.0.5", "0.0.0.0", "::ffff:127.0.0.1"):
        with pytest.raises(Refused, match="is this grid's own API"):
            policy.addresses(host, 8123)
    assert policy.addresses("127.0.0.1", 8124)


def test_bad_allow_lists_say_which_item() -> None:
    with pytest.raises(ValueError, match="not '10.0.0.0/33'"):
        parse_networks("10.0.0.0/8, 10.0.0.0/33")
    assert Isolation.for_grid("0.0.0.0", False).shared and Isolation.for_grid("127.0.0.1", True).shared
    assert not Isolation.for_grid("127.0.0.1", False).shared
    assert Isolation.for_grid("127.0.0.1", False, "exec").sandbox and Isolation.for_grid("10.0.0.1", True).sandbox


def test_real_requests_refused_then_allowed(servers: tuple[LoopbackServer, LoopbackServer]) -> None:
    allowed, refused = servers
    with client(shared=True, allow="127.0.0.2/32") as shared:
        assert shared.get(allowed.url).json()["server"] == "127.0.0.2"
        with pytest.raises(Refused, match=r"127.0.0.1:\d+ is a loopback address"):
            shared.get(refused.url)
        # Each redirect hop is checked again: an allowed server cannot bounce the request inward.
        with pytest.raises(Refused, match=r"127.0.0.1:\d+ is a loopback address"):
            shared.get(f"{allowed.url}/hop?to={refused.url}/")
    with client(shared=False) as local:  # the local grid keeps loopback
        assert local.get(refused.url).json()["server"] == "127.0.0.1"


def test_the_connection_goes_to_the_checked_address(servers: tuple[LoopbackServer, LoopbackServer]) -> None:
    """A resolver that answers an allowed address first and a refused one after (DNS rebinding):
    the request reaches the server at the address that was checked, under its own name."""
    allowed, refused = servers
    answers = iter([["127.0.0.2"], ["127.0.0.1"], ["127.0.0.1"]])
    with client(shared=True, allow="127.0.0.2/32", resolve=lambda host, port: next(answers)) as shared:
        answer = shared.get(f"http://rebind.test:{allowed.port}/")
        assert answer.json() == {"server": "127.0.0.2", "host": f"rebind.test:{allowed.port}"}
        assert str(answer.url) == f"http://rebind.test:{allowed.port}/"  # redirects resolve against the name
        with pytest.raises(Refused, match=r"rebind.test:\d+ \(127.0.0.1\) is a loopback address"):
            shared.get(f"http://rebind.test:{allowed.port}/")  # the next lookup answers 127.0.0.1: refused


def test_an_unresolvable_name_is_a_connect_error() -> None:
    def nothing(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with client(shared=True, resolve=nothing) as shared, pytest.raises(httpx.ConnectError, match="cannot resolve"):
        shared.get("http://nowhere.test/")


def test_a_connector_takes_the_grids_policy_and_its_flags_only_tighten_it() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    Isolation.add_arguments(parser)
    none, loose = parser.parse_args([]), parser.parse_args(["--http-allow", "0.0.0.0/0"])
    strict = parser.parse_args(["--shared"])
    shared_grid = {"shared": True, "sandbox": "exec", "http_allow": ["10.1.0.0/16"]}
    local_grid = {"shared": False, "sandbox": "none", "http_allow": []}
    # No flags (`flowmetal connector`): the grid's policy, whole.
    assert Isolation.from_grid(shared_grid, none) == Isolation(True, True, parse_networks("10.1.0.0/16"))
    assert Isolation.from_grid(local_grid, none) == Isolation(False, False, ())
    # A connector's own allow list never opens more than the grid's.
    assert Isolation.from_grid(shared_grid, loose).http_allow == parse_networks("10.1.0.0/16")
    assert Isolation.from_grid(local_grid, loose).http_allow == ()
    # Its flags may make it stricter: shared (and so sandboxed) against a local grid.
    assert Isolation.from_grid(local_grid, strict) == Isolation(True, True, ())
    assert Isolation.from_grid({"shared": False, "sandbox": "exec"}, none) == Isolation(False, True, ())
