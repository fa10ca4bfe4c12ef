"""The quota tree on a real local grid: limits at every level of a three-level tree, for root and
child flows; refused starts write nothing; journal limits fail the flow; ``why``; a restart.

The local grid's user is admin of /local/<user>, so each test's tree is /local/<user>/tN,
/local/<user>/tN/x and /local/<user>/tN/x/y (an admin sets limits below its own node), on one
grid for the module.
"""

from __future__ import annotations

import getpass
import json
import itertools
import sqlite3
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowmetal_cli.bundle import build_bundle
from grid_local.home import GridPaths
from grid_local.supervisor import start_background
from tests.integration.conftest import Grid, grid_env, stop_grid

HOME = f"/local/{getpass.getuser()}"
LEVELS = [f"{HOME}/t", f"{HOME}/t/x", f"{HOME}/t/x/y"]
LEAF = LEVELS[-1]
_trees = itertools.count()


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    """One grid for the module (each test works in a subtree of its own: ``levels``)."""
    tmp = tmp_path_factory.mktemp("quota")
    env = grid_env(tmp)
    paths = GridPaths(Path(env["FLOWMETAL_HOME"]))
    project = tmp / "project"
    project.mkdir()
    (project / "flowmetal.toml").write_text('[project]\nname = "it"\n')
    try:
        found = Grid(paths, start_background(paths, workers=2), env, project)
        yield found
        found.client.close()
    finally:
        stop_grid(paths)


@pytest.fixture
def levels() -> list[str]:
    """A three-level tree no other test uses: /local/<user>/tN, .../x, .../x/y."""
    top = f"{HOME}/t{next(_trees)}"
    return [top, f"{top}/x", f"{top}/x/y"]

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


def row_counts(db: Path, besides: list[str]) -> dict[str, int]:
    """Rows of every table a start writes to, leaving out those of flows still running (``besides``)."""
    marks = ",".join("?" * len(besides)) or "''"
    with sqlite3.connect(db) as connection:
        counts = {t: connection.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("flows", "quota_nodes")}
        for table, column in (("journal", "flow_id"), ("events", "flow_id")):
            counts[table] = connection.execute(
                f"SELECT COUNT(*) FROM {table} WHERE {column} NOT IN ({marks})", besides).fetchone()[0]
    return counts


@pytest.mark.parametrize("level", [0, 1, 2])
def test_running_limit_at_each_level_holds_roots_and_children_pending(grid: Grid, levels: list[str], level: int) -> None:
    grid.client.quota_set(levels[level], {"running": 1})
    sleeper = upload(grid, "sleeper.flow", SLEEPER)
    ids = [grid.client.start_flow(sleeper, {"seconds": 0.4}, quota=levels[-1])["id"] for _ in range(3)]
    # While one runs, the others say why they wait: the node that set the limit, and its figures.
    reason = wait_until(lambda: next((r for r in (grid.client.why(i)["reason"] for i in ids)
                                      if r.startswith("waiting for quota")), None))
    assert reason == f"waiting for quota {levels[level]}: 1 of 1 running flows"
    for flow_id in ids:
        assert grid.wait(flow_id)["status"] == "completed"
    assert not overlapping(intervals(grid, ids)), "two flows ran at once under a running limit of 1"

    # Children too: a parent waiting on its children does not count, so they run one at a time.
    fan_out = upload(grid, "fan_out.flow", FAN_OUT)
    parent = grid.client.start_flow(fan_out, {}, quota=levels[-1])["id"]
    assert grid.wait(parent, timeout=40)["status"] == "completed"
    children = [f["id"] for f in grid.client.list_flows(root=parent) if f["parent"] == parent]
    assert len(children) == 3
    assert not overlapping(intervals(grid, children))


def test_without_limits_the_same_flows_overlap(grid: Grid, levels: list[str]) -> None:
    """The check above can fail: with no limit the same three flows run at once."""
    sleeper = upload(grid, "sleeper.flow", SLEEPER)
    ids = [grid.client.start_flow(sleeper, {"seconds": 1.0}, quota=levels[-1])["id"] for _ in range(3)]
    for flow_id in ids:
        grid.wait(flow_id)
    assert overlapping(intervals(grid, ids))


def _refused(grid: Grid, digest: str, quota: str) -> httpx.Response:
    return httpx.post(f"{grid.url}/v1/flows", json={"bundle": digest, "args": {"seconds": 5}, "quota": quota})


@pytest.mark.parametrize("level", [0, 1, 2])
def test_hard_limits_at_each_level_refuse_a_start_and_write_nothing(grid: Grid, levels: list[str], level: int) -> None:
    node = levels[level]
    sleeper = upload(grid, "sleeper.flow", SLEEPER)

    grid.client.quota_set(node, {"live": 2})
    first = [grid.client.start_flow(sleeper, {"seconds": 5}, quota=levels[-1])["id"] for _ in range(2)]
    before = row_counts(grid.paths.db, first)
    refused = _refused(grid, sleeper, levels[-1])
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json() == {"error": "quota_exceeded", "message": f"quota {node}: 2 of 2 live flows (pending, running, waiting)"}
    assert row_counts(grid.paths.db, first) == before
    grid.client.cancel_subtree(levels[0])
    for flow_id in first:
        assert grid.wait(flow_id)["status"] == "cancelled"

    grid.client.quota_set(node, {"rate": 2})  # flows started per minute, the two above included
    before = row_counts(grid.paths.db, first)
    refused = _refused(grid, sleeper, levels[-1])
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["message"] == f"quota {node}: 2 of 2 flows started per minute"
    assert row_counts(grid.paths.db, first) == before

    grid.client.quota_set(node, {"bundle_bytes": 100})
    refused = _refused(grid, sleeper, levels[-1])
    assert refused.status_code == 413
    assert f"quota {node}: the bundle is" in refused.json()["message"]
    assert row_counts(grid.paths.db, first) == before


CHILDREN_OVER_LIVE = """
def _child_impl(fctx):
    fctx.actions.receive()  # live until its parent's second run was answered (it may run at once)
    return 1

child = flow(implementation = _child_impl)

if __name__ == "__flow__":
    a = fctx().actions
    first = a.run(child)
    second = a.run(child, check = False)
    print(second.error)
    a.send(first["flow_id"], "go")
    a.wait([first])
"""


def test_a_child_over_a_hard_limit_fails_its_run_and_starts_nothing(grid: Grid, levels: list[str]) -> None:
    grid.client.quota_set(levels[1], {"live": 2})  # the parent and its first child
    digest = upload(grid, "children.flow", CHILDREN_OVER_LIVE)
    parent = grid.client.start_flow(digest, {}, quota=levels[-1])["id"]
    assert grid.wait(parent)["status"] == "completed"
    assert grid.logs(parent) == [f"run child: quota {levels[1]}: 2 of 2 live flows (pending, running, waiting)"]
    assert len(grid.client.list_flows(root=parent)) == 2


CHATTY = """
def _chatty_impl(fctx):
    for i in range(20):
        print("line", i)

chatty = flow(implementation = _chatty_impl)

if __name__ == "__flow__":
    if fctx().args.child:
        chatty()
    else:
        for i in range(20):
            print("line", i)
"""


@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("limit", [{"journal_entries": 5}, {"journal_bytes": 300}])
def test_a_journal_at_its_limit_fails_the_flow_naming_node_and_limit(grid: Grid, levels: list[str], limit: dict[str, int],
                                                                     level: int) -> None:
    grid.client.quota_set(levels[level], limit)
    digest = upload(grid, "chatty.flow", CHATTY)
    words = "5 journal entries per flow" if "journal_entries" in limit else "300 journal bytes per flow"
    message = f"the journal reached the limit of quota {levels[level]}: {words}"
    root = grid.wait(grid.client.start_flow(digest, {"child": False}, quota=levels[-1])["id"])
    assert root["status"] == "failed" and root["error"]["message"] == message
    journal = grid.client.get_flow(root["id"])["journal"]
    if "journal_entries" in limit:
        assert len(journal) == 5
    else:
        assert 0 < sum(len(json.dumps(e["args"])) for e in journal) <= 300
    # a child's journal holds the same limit: the child fails with it, and so does its parent
    parent = grid.wait(grid.client.start_flow(digest, {"child": True}, quota=levels[-1])["id"])
    assert parent["status"] == "failed" and message in parent["error"]["message"]
    (child,) = [f for f in grid.client.list_flows(root=parent["id"]) if f["parent"] == parent["id"]]
    assert grid.client.get_flow(child["id"])["error"]["message"] == message


def test_without_a_journal_limit_the_same_flows_complete(grid: Grid, levels: list[str]) -> None:
    digest = upload(grid, "chatty.flow", CHATTY)
    for child in (False, True):
        assert grid.wait(grid.client.start_flow(digest, {"child": child}, quota=levels[-1])["id"])["status"] == "completed"


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


def test_why_gives_each_reason_in_one_line(grid: Grid, levels: list[str]) -> None:
    digest = upload(grid, "waiter.flow", WAITER)
    sleeping = grid.client.start_flow(digest, {"what": "sleep"}, quota=levels[-1])["id"]
    receiving = grid.client.start_flow(digest, {"what": "message"}, quota=levels[-1])["id"]
    parent = grid.client.start_flow(digest, {"what": "child"}, quota=levels[-1])["id"]

    assert wait_until(lambda: grid.client.why(sleeping)["kind"] == "sleep")
    assert grid.client.why(sleeping)["reason"].startswith("sleeping until 20")
    assert wait_until(lambda: grid.client.why(receiving)["reason"] == "waiting for a message on inbox approvals")
    child = wait_until(lambda: [f for f in grid.client.list_flows(root=parent) if f["parent"] == parent])[0]
    assert wait_until(lambda: grid.client.why(parent)["reason"] == f"waiting for child child ({child['id']})")
    assert wait_until(lambda: grid.client.why(child["id"])["reason"] == "waiting for a message on inbox go")
    assert grid.client.get_flow(parent)["why"] == f"waiting for child child ({child['id']})"

    # a running limit reached: the next start waits for quota; with room, for a worker slot
    grid.client.quota_set(levels[0], {"running": 0})
    held = grid.client.start_flow(digest, {"what": "sleep"}, quota=levels[-1])["id"]
    assert grid.client.why(held)["reason"].startswith(f"waiting for quota {levels[0]}: ")
    assert grid.client.why(held)["reason"].endswith(" of 0 running flows")
    # a flow list with ?why=true gives every live flow the same line (the TUI's flow tree shows it)
    listed = {f["id"]: f for f in grid.client.list_flows(quota=levels[0], why=True)}
    live = [sleeping, receiving, parent, child["id"], held]
    assert {i: listed[i].get("why") for i in live} == {i: grid.client.why(i)["reason"] for i in live}
    assert all("why" not in f for f in grid.client.list_flows(quota=levels[0]))
    grid.client.quota_set(levels[0], {"running": None})
    assert wait_until(lambda: grid.client.why(held)["kind"] == "sleep")

    grid.client.cancel_subtree(levels[0])
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



def _latency(grid: Grid, digest: str, quota: str) -> float:
    started = time.monotonic()
    flow_id = grid.client.start_flow(digest, {}, quota=quota)["id"]
    deadline = started + 60
    while grid.client.get_flow(flow_id)["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return time.monotonic() - started


def test_a_flooded_subtree_does_not_delay_its_siblings_at_any_level(grid: Grid, levels: list[str]) -> None:
    """/tN allows 4 running flows; 150 flows (each holding its slot 0.2 s) flood six nodes below
    /tN/acme/ci. A /tN/acme/web flow and a /tN/other flow each take the next free slot instead of
    queueing behind the flood: first in, first out would make them wait for the flows queued ahead
    (seconds), and fairness among the leaves alone would too (six flooded leaves, one at 0 running
    at any time, each with older flows than theirs); fair at every level, for one slot (0.2 s)."""
    top = levels[0]
    grid.client.quota_set(top, {"running": 4})
    quick = upload(grid, "quick.flow", "fctx().actions.now()\n")
    busy = upload(grid, "busy.flow", SLEEPER)
    idle = statistics.median(_latency(grid, quick, f"{top}/acme/web") for _ in range(3))
    flood = [grid.client.start_flow(busy, {"seconds": 0.2}, quota=f"{top}/acme/ci/{i % 6}")["id"] for i in range(150)]
    queued = grid.client.quota_show(f"{top}/acme/ci")["usage"]["pending"]
    assert queued > 60, "the flood never queued: the test proves nothing"
    assert wait_until(lambda: grid.client.why(flood[-1])["reason"] == f"waiting for quota {top}: 4 of 4 running flows")
    web = _latency(grid, quick, f"{top}/acme/web")  # one flow each, while the flood is queued
    other = _latency(grid, quick, f"{top}/other")
    still = grid.client.quota_show(f"{top}/acme/ci")["usage"]["pending"]
    print(f"idle {idle:.3f} s; flooded: /acme/web {web:.3f} s, /other {other:.3f} s; {queued} queued, {still} after")
    assert still > 20, "the flood drained before the measurements: the test proves nothing"
    assert web < max(5 * idle, 1.5) and other < max(5 * idle, 1.5)
    grid.client.cancel_subtree(top)


def test_a_flow_queued_behind_full_workers_waits_for_a_slot(grid: Grid, levels: list[str]) -> None:
    """No limit holds it: 200 flows (more than the grid's 128 worker slots) each holding its slot
    for a second; one still queued says it waits for a worker slot."""
    busy = upload(grid, "busy.flow", SLEEPER)
    flood = [grid.client.start_flow(busy, {"seconds": 1.0}, quota=levels[0])["id"] for _ in range(200)]
    try:
        reason = wait_until(lambda: next((r for r in (grid.client.why(f)["reason"] for f in reversed(flood[-20:]))
                                          if r.startswith("waiting for a worker slot")), None))
        assert reason.endswith(" flows queued before it)")
    finally:
        grid.client.cancel_subtree(levels[0])


SPIN = """
def _spin_impl(fctx):
    n = 0
    for i in range(2000000000):
        n += i

spin = flow(implementation = _spin_impl)

if __name__ == "__flow__":
    if fctx().args.child:
        spin()
    else:
        _spin_impl(fctx())
"""


@pytest.mark.parametrize("level", [0, 1, 2])
def test_an_eval_budget_cap_bounds_what_a_bundle_asks_for(grid: Grid, levels: list[str], level: int) -> None:
    (grid.project / "flowmetal.toml").write_text('[project]\nname = "it"\n\n[limits]\neval_budget = 30\n')
    try:
        digest = upload(grid, "spin.flow", SPIN)
    finally:
        (grid.project / "flowmetal.toml").write_text('[project]\nname = "it"\n')
    grid.client.quota_set(levels[level], {"eval_budget": 0.5})
    for child in (False, True):
        started = time.monotonic()
        flow = grid.wait(grid.client.start_flow(digest, {"child": child}, quota=levels[-1])["id"], timeout=25)
        assert flow["status"] == "failed"
        assert "evaluation budget exceeded: more than 0.5 s" in flow["error"]["message"]
        assert flow["error"]["message"].endswith(f"(the cap of quota {levels[level]}: 0.5s of evaluation budget per flow)")
        assert time.monotonic() - started < 20, "the bundle's own 30 s budget held, not the quota's cap"


BIG = """
def _big_impl(fctx):
    x = [0] * fctx.args.n  # 8 bytes a value: 20,000,000 of them are 153 MiB
    return len(x)

big = flow(implementation = _big_impl)

if __name__ == "__flow__":
    if fctx().args.child:
        big(n = fctx().args.n)
    else:
        _big_impl(fctx())
"""


def big_bundle(grid: Grid, memory_mib: int) -> str:
    """BIG in a bundle whose flowmetal.toml asks for ``memory_mib`` per flow."""
    (grid.project / "flowmetal.toml").write_text(f'[project]\nname = "it"\n\n[limits]\nmemory_mib = {memory_mib}\n')
    try:
        return upload(grid, "big.flow", BIG)
    finally:
        (grid.project / "flowmetal.toml").write_text('[project]\nname = "it"\n')


@pytest.mark.parametrize("level", [0, 1, 2])
def test_a_memory_cap_at_each_level_bounds_what_a_bundle_asks_for(grid: Grid, levels: list[str], level: int) -> None:
    digest = big_bundle(grid, 1024)
    for number, node in enumerate(levels):  # the tightest cap is on levels[level]; the others are looser
        grid.client.quota_set(node, {"memory": 64 if number == level else 512 + number})
    for child in (False, True):
        failed = grid.wait(grid.client.start_flow(digest, {"child": child, "n": 20_000_000}, quota=levels[-1])["id"])
        assert failed["status"] == "failed", failed
        message = failed["error"]["message"]
        assert "memory limit exceeded: this flow's evaluation grew its worker's memory by " in message
        assert message.endswith(f"more than its 64 MiB (the cap of quota {levels[level]}: 64 MiB of memory per flow)"), message
        small = grid.wait(grid.client.start_flow(digest, {"child": child, "n": 1000}, quota=levels[-1])["id"])
        assert small["status"] == "completed", small
    shown = grid.client.quota_show(levels[-1])
    assert shown["effective"]["memory"] == {"value": 64, "node": levels[level]}


def test_without_a_memory_cap_the_same_flow_completes_and_its_own_limit_holds(grid: Grid, levels: list[str]) -> None:
    roomy = grid.wait(grid.client.start_flow(big_bundle(grid, 1024), {"child": False, "n": 20_000_000},
                                             quota=levels[-1])["id"])
    assert roomy["status"] == "completed", roomy
    grid.client.quota_set(levels[0], {"memory": 512})  # looser than the bundle's own: its own holds
    own = grid.wait(grid.client.start_flow(big_bundle(grid, 32), {"child": False, "n": 20_000_000},
                                           quota=levels[-1])["id"])
    assert own["status"] == "failed" and own["error"]["message"].endswith("more than its 32 MiB ([limits] memory_mib)")


HOLDER = """
load("pkg.flowmetal.io/workspace/v1", "workspace")

def _hold_impl(fctx):
    fctx.actions.receive(inbox = "go")

hold = flow(implementation = _hold_impl, resources = {"ws": lambda fctx: workspace()})

def _holders_impl(fctx):
    a = fctx.actions
    for r in a.wait([a.run(hold)]):
        if not r.ok:
            print(r.error)

holders = flow(implementation = _holders_impl)

if __name__ == "__flow__":
    if fctx().args.nested:
        holders()
    else:
        hold()
"""


def journal_bytes(db: Path, quotas: list[str]) -> int:
    """What the journals of the flows in ``quotas`` hold, counted from the journal itself."""
    marks = ",".join("?" * len(quotas))
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT COALESCE(SUM(length(CAST(j.args AS BLOB)) + COALESCE(length(CAST(j.result AS BLOB)), 0)), 0) "
            f"FROM journal j JOIN flows f ON f.id = j.flow_id WHERE f.quota IN ({marks})", quotas).fetchone()[0]


@pytest.mark.parametrize("level", [0, 1, 2])
def test_open_resources_are_limited_at_each_level_and_reported(grid: Grid, levels: list[str], level: int) -> None:
    node = levels[level]
    grid.client.quota_set(node, {"resources": 2})
    digest = upload(grid, "holder.flow", HOLDER)
    holding = [grid.client.start_flow(digest, {"nested": False}, quota=levels[-1])["id"] for _ in range(2)]

    def usage() -> list[dict[str, Any]]:
        return [n["usage"] for n in grid.client.quota_tree(levels[0])["nodes"]]

    # usage: two open workspaces, at the leaf and rolled up to every ancestor
    wait_until(lambda: all(u["resources"] == 2 for u in usage()))
    message = f"cannot open resource 'ws': quota {node}: 2 of 2 open resources (workspaces, containers)"
    refused = grid.wait(grid.client.start_flow(digest, {"nested": False}, quota=levels[-1])["id"])
    assert refused["status"] == "failed" and message in refused["error"]["message"]
    nested = grid.wait(grid.client.start_flow(digest, {"nested": True}, quota=levels[-1])["id"])
    (said,) = grid.logs(nested["id"])
    assert nested["status"] == "completed" and said.endswith(f" failed: {message}")
    assert [u["resources"] for u in usage()] == [2, 2, 2], "a refused open holds nothing"

    # journal bytes: every journal of the subtree, counted by the Flow DB as entries are written
    tree = grid.client.quota_tree(levels[0])["nodes"]
    assert tree[0]["usage"]["journal_bytes"] == journal_bytes(grid.paths.db, levels) > 0
    assert tree[2]["usage"]["journal_bytes"] == journal_bytes(grid.paths.db, levels[2:])
    shown = grid.cli("quota", "show", levels[1]).stdout
    assert ", 2 open resources, journals " in shown

    grid.client.cancel_subtree(levels[0])  # their flows end: the workspaces close and room comes back
    wait_until(lambda: usage()[0]["resources"] == 0)
    again = grid.client.start_flow(digest, {"nested": False}, quota=levels[-1])["id"]
    wait_until(lambda: usage()[0]["resources"] == 1)
    grid.client.cancel(again)


def test_the_quota_commands(grid: Grid, levels: list[str]) -> None:
    done = grid.cli("quota", "set", levels[1], "--running", "3", "--rate", "2/s", "--live", "50")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"quota {levels[1]}: running 3, rate 120, live 50; share 1\n"
    assert grid.cli("quota", "set", levels[1], "--rate", "fast").returncode == 2
    zero = grid.cli("quota", "set", levels[1], "--memory", "0")
    assert zero.returncode == 2 and "--memory: must be at least 1 MiB, not 0" in zero.stderr
    capped = grid.cli("quota", "set", levels[2], "--memory", "256")
    assert capped.returncode == 0 and capped.stdout == f"quota {levels[2]}: memory 256; share 1\n", capped.stderr
    refused = grid.cli("quota", "set", HOME, "--running", "1")  # its own node: its parent admin's
    assert refused.returncode == 4 and "set by an admin of its parent" in refused.stderr

    sleeper = upload(grid, "sleeper.flow", SLEEPER)
    ids = [grid.client.start_flow(sleeper, {"seconds": 30}, quota=levels[-1])["id"] for _ in range(2)]
    tree = json.loads(grid.cli("quota", "tree", levels[0], "--json").stdout)
    assert [n["path"] for n in tree["nodes"]] == levels
    assert tree["nodes"][0]["usage"]["live"] == 2 and tree["nodes"][1]["limits"]["running"] == 3
    table = grid.cli("quota", "tree", levels[0]).stdout.splitlines()
    assert table[1].startswith(levels[0]) and table[2].strip().startswith("x") and "/50" in table[2]
    shown = grid.cli("quota", "show", levels[-1]).stdout
    assert f"running flows                            3  (set on {levels[1]})" in shown

    assert grid.cli("cancel", "--quota", levels[0]).returncode == 2  # --all is required
    done = grid.cli("cancel", "--quota", levels[0], "--all")
    assert done.returncode == 0 and done.stdout.startswith("cancelled 2 flow(s): ")
    for flow_id in ids:
        assert grid.wait(flow_id)["status"] == "cancelled"


def test_run_and_start_in_a_node_of_ones_authority(grid: Grid, levels: list[str]) -> None:
    script = grid.write("quick.flow", "fctx().actions.now()\n")
    done = grid.cli("run", "--quota", levels[1], "--detach", str(script))
    assert done.returncode == 0, done.stderr
    assert grid.wait(done.stdout.strip())["quota"] == levels[1]
    assert grid.cli("push", "--name", f"quick-{levels[0].rsplit('/', 1)[1]}", str(script)).returncode == 0
    done = grid.cli("start", "--quota", levels[2], "--detach", f"quick-{levels[0].rsplit('/', 1)[1]}")
    assert done.returncode == 0, done.stderr
    assert grid.wait(done.stdout.strip())["quota"] == levels[2]
    before = len(grid.client.list_flows(quota=levels[0]))
    refused = grid.cli("run", "--quota", "/elsewhere", "--detach", str(script))  # outside /local/<user>
    assert refused.returncode == 4 and f"may not start flows in /elsewhere" in refused.stderr
    assert grid.cli("run", "--quota", "/a b", "--detach", str(script)).returncode == 2
    assert len(grid.client.list_flows(quota=levels[0])) == before
