"""The quota tree on a real local grid: limits at every level of a three-level tree, for root and
child flows; refused starts write nothing; journal limits fail the flow; ``why``; a restart.

The local grid's user is admin of /local/<user>, so the tree under test is /local/<user>/t,
/local/<user>/t/x and /local/<user>/t/x/y (an admin sets limits below its own node).
"""

from __future__ import annotations

import getpass
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowmetal_cli.bundle import build_bundle
from tests.integration.conftest import Grid, stop_grid

HOME = f"/local/{getpass.getuser()}"
LEVELS = [f"{HOME}/t", f"{HOME}/t/x", f"{HOME}/t/x/y"]
LEAF = LEVELS[-1]

# Each flow journals when it began and ended its sleep: under a running limit of 1 their intervals
# cannot overlap.
SLEEPER = """
if __name__ == "__flow__":
    a = fctx().actions
    began = a.now()
    a.sleep(fctx().args.seconds)
    a.now()
"""

FAN_OUT = """
def _child_impl(fctx):
    a = fctx.actions
    began = a.now()
    a.sleep(0.4)
    return [began, a.now()]

child = flow(implementation = _child_impl)

if __name__ == "__flow__":
    a = fctx().actions
    tasks = [a.run(child) for i in range(3)]
    print(a.wait(tasks))
"""


def upload(grid: Grid, name: str, source: str) -> str:
    built = build_bundle(grid.write(name, source))
    if not grid.client.has_bundle(built.digest):
        grid.client.upload_bundle(built.data, built.digest)
    return built.digest


def intervals(grid: Grid, flow_ids: list[str]) -> list[tuple[float, float]]:
    """(began, ended) of each flow's sleep, from the first and last ``now`` of its journal."""
    found = []
    for flow_id in flow_ids:
        nows = [e["result"]["value"] for e in grid.client.get_flow(flow_id)["journal"] if e["kind"] == "now"]
        found.append((nows[0], nows[-1]))
    return sorted(found)


def overlapping(spans: list[tuple[float, float]]) -> bool:
    return any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))


def wait_until(probe: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


def row_counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as connection:
        return {t: connection.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("flows", "journal", "events", "quota_nodes")}


def reset(grid: Grid) -> None:
    """Remove every limit of the test tree (between the levels of one test)."""
    for node in LEVELS:
        grid.client.quota_set(node, {"running": None, "live": None, "rate": None, "bundle_bytes": None,
                                     "journal_entries": None, "journal_bytes": None})


@pytest.mark.parametrize("level", [0, 1, 2])
def test_running_limit_at_each_level_holds_roots_and_children_pending(grid: Grid, level: int) -> None:
    reset(grid)
    grid.client.quota_set(LEVELS[level], {"running": 1})
    sleeper = upload(grid, "sleeper.flow", SLEEPER)
    ids = [grid.client.start_flow(sleeper, {"seconds": 0.4}, quota=LEAF)["id"] for _ in range(3)]
    # While one runs, the others say why they wait: the node that set the limit, and its figures.
    reason = wait_until(lambda: next((r for r in (grid.client.why(i)["reason"] for i in ids)
                                      if r.startswith("waiting for quota")), None))
    assert reason == f"waiting for quota {LEVELS[level]}: 1 of 1 running flows"
    for flow_id in ids:
        assert grid.wait(flow_id)["status"] == "completed"
    assert not overlapping(intervals(grid, ids)), "two flows ran at once under a running limit of 1"

    # Children too: a parent waiting on its children does not count, so they run one at a time.
    fan_out = upload(grid, "fan_out.flow", FAN_OUT)
    parent = grid.client.start_flow(fan_out, {}, quota=LEAF)["id"]
    assert grid.wait(parent, timeout=40)["status"] == "completed"
    children = [f["id"] for f in grid.client.list_flows(root=parent) if f["parent"] == parent]
    assert len(children) == 3
    assert not overlapping(intervals(grid, children))


def test_without_limits_the_same_flows_overlap(grid: Grid) -> None:
    """The check above can fail: with no limit the same three flows run at once."""
    sleeper = upload(grid, "sleeper.flow", SLEEPER)
    ids = [grid.client.start_flow(sleeper, {"seconds": 1.0}, quota=LEAF)["id"] for _ in range(3)]
    for flow_id in ids:
        grid.wait(flow_id)
    assert overlapping(intervals(grid, ids))


def _refused(grid: Grid, digest: str, quota: str) -> httpx.Response:
    return httpx.post(f"{grid.url}/v1/flows", json={"bundle": digest, "args": {"seconds": 5}, "quota": quota})


@pytest.mark.parametrize("level", [0, 1, 2])
def test_hard_limits_at_each_level_refuse_a_start_and_write_nothing(grid: Grid, level: int) -> None:
    reset(grid)
    node = LEVELS[level]
    sleeper = upload(grid, "sleeper.flow", SLEEPER)

    grid.client.quota_set(node, {"live": 2})
    first = [grid.client.start_flow(sleeper, {"seconds": 5}, quota=LEAF)["id"] for _ in range(2)]
    before = row_counts(grid.paths.db)
    refused = _refused(grid, sleeper, LEAF)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json() == {"error": "quota_exceeded", "message": f"quota {node}: 2 of 2 live flows (pending, running, waiting)"}
    assert row_counts(grid.paths.db) == before
    grid.client.cancel_subtree(f"{HOME}/t")
    for flow_id in first:
        assert grid.wait(flow_id)["status"] == "cancelled"

    reset(grid)
    grid.client.quota_set(node, {"rate": 2})  # flows started per minute, the two above included
    before = row_counts(grid.paths.db)
    refused = _refused(grid, sleeper, LEAF)
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["message"] == f"quota {node}: 2 of 2 flows started per minute"
    assert row_counts(grid.paths.db) == before

    reset(grid)
    grid.client.quota_set(node, {"bundle_bytes": 100})
    refused = _refused(grid, sleeper, LEAF)
    assert refused.status_code == 413
    assert f"quota {node}: the bundle is" in refused.json()["message"]
    assert row_counts(grid.paths.db) == before


CHILDREN_OVER_LIVE = """
def _child_impl(fctx):
    return 1

child = flow(implementation = _child_impl)

if __name__ == "__flow__":
    a = fctx().actions
    first = a.run(child)
    second = a.run(child, check = False)
    print(second.error)
    a.wait([first])
"""


def test_a_child_over_a_hard_limit_fails_its_run_and_starts_nothing(grid: Grid) -> None:
    reset(grid)
    grid.client.quota_set(LEVELS[1], {"live": 2})  # the parent and its first child
    digest = upload(grid, "children.flow", CHILDREN_OVER_LIVE)
    parent = grid.client.start_flow(digest, {}, quota=LEAF)["id"]
    assert grid.wait(parent)["status"] == "completed"
    assert grid.logs(parent) == [f"run child: quota {LEVELS[1]}: 2 of 2 live flows (pending, running, waiting)"]
    assert len(grid.client.list_flows(root=parent)) == 2


CHATTY = """
if __name__ == "__flow__":
    for i in range(20):
        print("line", i)
"""


@pytest.mark.parametrize("limit", [{"journal_entries": 5}, {"journal_bytes": 300}])
def test_a_journal_at_its_limit_fails_the_flow_naming_node_and_limit(grid: Grid, limit: dict[str, int]) -> None:
    reset(grid)
    grid.client.quota_set(LEVELS[0], limit)
    digest = upload(grid, "chatty.flow", CHATTY)
    flow = grid.wait(grid.client.start_flow(digest, {}, quota=LEAF)["id"])
    assert flow["status"] == "failed"
    words = "5 journal entries per flow" if "journal_entries" in limit else "300 journal bytes per flow"
    assert flow["error"]["message"] == f"the journal reached the limit of quota {LEVELS[0]}: {words}"
    journal = grid.client.get_flow(flow["id"])["journal"]
    if "journal_entries" in limit:
        assert len(journal) == 5
    else:
        assert sum(len(str(e["args"])) for e in journal) < 300 + 40


WAITER = """
def _child_impl(fctx):
    fctx.actions.receive(inbox = "go")

child = flow(implementation = _child_impl)

if __name__ == "__flow__":
    a = fctx().actions
    if fctx().args.what == "child":
        a.wait([a.run(child)])
    elif fctx().args.what == "sleep":
        a.sleep(30)
    else:
        a.receive(inbox = "approvals")
"""


def test_why_gives_each_reason_in_one_line(grid: Grid) -> None:
    reset(grid)
    digest = upload(grid, "waiter.flow", WAITER)
    sleeping = grid.client.start_flow(digest, {"what": "sleep"}, quota=LEAF)["id"]
    receiving = grid.client.start_flow(digest, {"what": "message"}, quota=LEAF)["id"]
    parent = grid.client.start_flow(digest, {"what": "child"}, quota=LEAF)["id"]

    assert wait_until(lambda: grid.client.why(sleeping)["kind"] == "sleep")
    assert grid.client.why(sleeping)["reason"].startswith("sleeping until 20")
    assert wait_until(lambda: grid.client.why(receiving)["reason"] == "waiting for a message on inbox approvals")
    child = wait_until(lambda: [f for f in grid.client.list_flows(root=parent) if f["parent"] == parent])[0]
    assert wait_until(lambda: grid.client.why(parent)["reason"] == f"waiting for child child ({child['id']})")
    assert wait_until(lambda: grid.client.why(child["id"])["reason"] == "waiting for a message on inbox go")
    assert grid.client.get_flow(parent)["why"] == f"waiting for child child ({child['id']})"

    # a running limit reached: the next start waits for quota; with room, for a worker slot
    grid.client.quota_set(LEVELS[0], {"running": 0})
    held = grid.client.start_flow(digest, {"what": "sleep"}, quota=LEAF)["id"]
    assert grid.client.why(held)["reason"].startswith(f"waiting for quota {LEVELS[0]}: ")
    assert grid.client.why(held)["reason"].endswith(" of 0 running flows")
    grid.client.quota_set(LEVELS[0], {"running": None})
    assert wait_until(lambda: grid.client.why(held)["kind"] == "sleep")

    grid.client.cancel_subtree(f"{HOME}/t")
    assert grid.client.why(parent)["reason"] == "not waiting: it cancelled"
    done = grid.cli("why", sleeping)
    assert done.returncode == 0 and done.stdout == "not waiting: it cancelled\n"


def test_limits_survive_a_grid_restart(grid_factory: Any) -> None:
    grid = grid_factory()
    grid.client.quota_set(LEVELS[1], {"running": 3, "live": 7, "rate": 120, "share": 2})
    grid.client.quota_set(LEAF, {})
    stop_grid(grid.paths)
    grid = grid_factory()
    node = grid.client.quota_show(LEVELS[1])
    assert node["limits"] == {"running": 3, "live": 7, "rate": 120} and node["share"] == 2
    assert node["effective"]["running"] == {"value": 3, "node": LEVELS[1]}
    assert grid.client.quota_show(LEAF)["effective"]["live"] == {"value": 7, "node": LEVELS[1]}

