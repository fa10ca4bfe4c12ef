"""The quota tree's pure rules: paths, roles, the fair claim order under running limits."""

from __future__ import annotations

import pytest

from grid_local import quota_tree as qt


def queued(quota: str, n: int, start: float = 0.0) -> list[qt.Queued]:
    return [qt.Queued(f"{quota}#{i}", quota, start + i) for i in range(n)]


def test_paths_normalize_and_bad_ones_are_refused() -> None:
    assert qt.normalize("acme/ci/") == "/acme/ci"
    assert qt.normalize("/") == "/"
    assert qt.ancestry("/acme/ci") == ["/acme/ci", "/acme", "/"]
    assert qt.under("/acme/ci", "/acme") and not qt.under("/acmex", "/acme") and qt.under("/x", "/")
    for bad in ("/acme/..", "/a b", "/" + "/".join("x" * 17)):
        with pytest.raises(qt.QuotaPathError):
            qt.normalize(bad)


def test_rates_parse() -> None:
    assert [qt.parse_rate(t) for t in ("30", "30/m", "2/s", "120/h")] == [30, 30, 120, 2]
    with pytest.raises(ValueError):
        qt.parse_rate("fast")


def test_a_flooded_node_does_not_delay_its_siblings_next_flow() -> None:
    flood = queued("/acme/ci", 1000)
    web = [qt.Queued("web", "/acme/web", 5000.0)]  # the newest flow of all
    picked = qt.fair_pick(flood + web, running={"/acme/ci": 50}, running_limits={}, shares={}, limit=1)
    assert picked == ["web"]
    # with room for several, the nodes alternate, each oldest first
    picked = qt.fair_pick(queued("/a", 3) + queued("/b", 3, start=100), {}, {}, {}, limit=4)
    assert picked == ["/a#0", "/b#0", "/a#1", "/b#1"]


def test_fairness_holds_at_every_level_of_the_tree() -> None:
    """Ten flooded nodes below /acme/ci weigh as one sibling of /acme/web, and /acme as one of /other:
    served leaf by leaf (first in, first out among equals), the flood would take the first slots."""
    flood = [f for i in range(10) for f in queued(f"/acme/ci/{i}", 100)]
    late = [qt.Queued("web", "/acme/web", 5000.0), qt.Queued("other", "/other", 5001.0)]
    picked = qt.fair_pick(flood + late, running={}, running_limits={}, shares={}, limit=3)
    assert picked == ["/acme/ci/0#0", "other", "web"]
    # with the flood running, the next slot goes to whichever sibling runs least, at each level
    busy = {f"/acme/ci/{i}": 4 for i in range(10)}
    assert qt.fair_pick(flood + late, busy, {}, {}, limit=2) == ["other", "web"]
    # an interior node's share weighs its whole subtree
    picked = qt.fair_pick(flood + queued("/other", 100, start=0.5), {}, {}, {"/acme": 3}, limit=8)
    assert sum(p.startswith("/acme/") for p in picked) == 6
    # flows queued in a node itself compete with its children
    picked = qt.fair_pick(queued("/acme", 5) + queued("/acme/ci", 5, start=0.5), {}, {}, {}, limit=4)
    assert sorted(picked) == ["/acme#0", "/acme#1", "/acme/ci#0", "/acme/ci#1"]


def test_shares_weight_the_order() -> None:
    picked = qt.fair_pick(queued("/a", 6) + queued("/b", 6), {}, {}, {"/a": 2}, limit=6)
    assert sum(p.startswith("/a") for p in picked) == 4


def test_running_limits_hold_at_every_ancestor() -> None:
    flows = queued("/acme/ci/x", 5) + queued("/acme/web", 5, start=0.5)
    # /acme allows 3 running in all, one already runs in /acme/web
    picked = qt.fair_pick(flows, {"/acme/web": 1}, {"/acme": 3}, {}, limit=10)
    assert len(picked) == 2
    # a limit on a deeper node only holds its own subtree
    picked = qt.fair_pick(flows, {}, {"/acme/ci": 1}, {}, limit=10)
    assert [p for p in picked if p.startswith("/acme/ci")] == ["/acme/ci/x#0"]
    assert len(picked) == 6
    assert qt.blocking_limit("/acme/ci/x", {"/acme/ci/x": 1}, {"/acme/ci": 1}) == qt.Refusal("/acme/ci", "running", 1, 1)
    assert qt.blocking_limit("/acme/web", {"/acme/ci/x": 1}, {"/acme/ci": 1}) is None


def test_roles() -> None:
    assert qt.may_set_limits("admin", "/acme", "/acme/ci")
    assert not qt.may_set_limits("admin", "/acme", "/acme")  # its parent's admin sets those
    assert not qt.may_set_limits("admin", "/acme", "/other")
    assert not qt.may_set_limits("member", "/acme", "/acme/ci")
    assert qt.may_start_in("member", "/acme", "/acme") and not qt.may_start_in("member", "/acme", "/acme/ci")
    assert qt.may_start_in("admin", "/acme", "/acme/ci") and not qt.may_start_in("viewer", "/acme", "/acme")
    assert qt.may_see("member", "/acme", "alice", "/acme", "alice")
    assert not qt.may_see("member", "/acme", "alice", "/acme", "bob")
    assert qt.may_see("viewer", "/acme", "carol", "/acme/ci", "bob")
    assert not qt.may_steer("viewer", "/acme", "carol", "/acme", "carol")
    assert qt.may_steer("admin", "/acme", "root", "/acme/ci", "bob")
