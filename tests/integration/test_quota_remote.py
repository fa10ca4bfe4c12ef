"""The quota commands through the real CLI against a shared grid (``--listen``, ``--tokens``).

Tokens: ann admin of /acme, alice and bob members of /acme/ci, vic viewer of /acme; each is a CLI
context reading its token from the environment. ``quota tree/set/show``, ``why`` and ``cancel
--quota --all`` as each role; every refusal exits 4 with the grid's 403 message and changes no row
of the Flow DB; the limits survive the grid restarting.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flowmetal_cli.client import GridClient
from grid_local.home import GridPaths
from grid_local.supervisor import free_port, start_background
from tests.helpers import write_file
from tests.integration.conftest import FINISHED, grid_env, stop_grid
from tests.integration.test_quota_grid import wait_until

USERS = {"ann": ("/acme", "admin"), "alice": ("/acme/ci", "member"), "bob": ("/acme/ci", "member"),
         "vic": ("/acme", "viewer")}
TABLES = ("flows", "journal", "events", "quota_nodes")

SLEEPER = """
if __name__ == "__flow__":
    fctx().actions.sleep(60)
"""


@dataclass
class Shared:
    tmp: Path
    paths: GridPaths
    tokens: Path
    env: dict[str, str]
    project: Path
    url: str = ""

    def start(self) -> None:
        self.url = str(start_background(self.paths, workers=1, listen=f"127.0.0.1:{free_port()}",
                                        tokens=self.tokens)["url"])
        for user in USERS:  # the port is new on every start: point each context at it
            self.cli("context", "remove", user)
            added = self.cli("context", "add", user, "--url", self.url, "--token-env", f"{user.upper()}_TOKEN")
            assert added.returncode == 0, added.stderr

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "flowmetal_cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=90, cwd=self.project)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def as_user(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli(*args, "--context", user)

    def client(self, user: str) -> GridClient:
        return GridClient(self.url, token=f"token-{user}", context=user)

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of the tables a quota command or a start could write."""
        with sqlite3.connect(self.paths.db) as connection:
            return {t: sorted(connection.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TABLES}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    tmp = tmp_path_factory.mktemp("quota-remote")
    tokens = tmp / "tokens.toml"
    tokens.write_text("".join(f'[tokens."token-{user}"]\nuser = "{user}"\nquota = "{node}"\nrole = "{role}"\n\n'
                              for user, (node, role) in USERS.items()))
    env = {**grid_env(tmp), **{f"{user.upper()}_TOKEN": f"token-{user}" for user in USERS}}
    project = tmp / "project"
    write_file(project, "flowmetal.toml", '[project]\nname = "quota-remote"\n')
    write_file(project, "sleeper.flow", SLEEPER)
    found = Shared(tmp, GridPaths(tmp / "shared-home"), tokens, env, project)
    try:
        found.start()
        yield found
    finally:
        stop_grid(found.paths)
        stop_grid(GridPaths(Path(env["FLOWMETAL_HOME"])))  # had anything fallen back to a local grid


def refused(shared: Shared, user: str, *args: str, says: str) -> None:
    """The command is refused (exit 4, the grid's 403 message) and no row changes."""
    before = shared.rows()
    done = shared.as_user(user, *args)
    assert done.returncode == 4, (done.stdout, done.stderr)
    assert says in done.stderr and done.stderr.startswith(f"error: context '{user}': "), done.stderr
    assert shared.rows() == before


def test_quota_set_tree_show_by_role(shared: Shared) -> None:
    done = shared.as_user("ann", "quota", "set", "/acme/ci", "--running", "0", "--live", "5", "--resources", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "quota /acme/ci: running 0, live 5, resources 3; share 1\n"
    refused(shared, "ann", "quota", "set", "/acme", "--running", "9",
            says="the limits of /acme are set by an admin of its parent, not by its own admin")
    refused(shared, "alice", "quota", "set", "/acme/ci", "--running", "9",
            says="alice (member of /acme/ci) may not set the limits of /acme/ci: only an admin of a node above it")
    refused(shared, "vic", "quota", "set", "/acme/ci", "--running", "9", says="vic is a viewer of /acme and may not set quota limits")
    refused(shared, "ann", "quota", "set", "/other", "--running", "9", says="may not set the limits of /other")

    tree = json.loads(shared.as_user("vic", "quota", "tree", "--json").stdout)  # a viewer reads its subtree
    assert [n["path"] for n in tree["nodes"]] == ["/acme", "/acme/ci"]
    assert tree["nodes"][1]["limits"] == {"running": 0, "live": 5, "resources": 3}
    table = shared.as_user("ann", "quota", "tree").stdout.splitlines()
    assert table[0].startswith("NODE") and table[1].startswith("/acme ") and table[2].strip().startswith("ci ")
    mine = json.loads(shared.as_user("alice", "quota", "tree", "--json").stdout)  # default: the caller's node
    assert [n["path"] for n in mine["nodes"]] == ["/acme/ci"]
    refused(shared, "alice", "quota", "tree", "/acme", says="quota node /acme is outside your quota node /acme/ci")
    refused(shared, "vic", "quota", "show", "/other", says="quota node /other is outside your quota node /acme")
    shown = shared.as_user("alice", "quota", "show", "/acme/ci")
    assert shown.returncode == 0 and "running flows                            0" in shown.stdout


def test_why_and_cancel_by_role(shared: Shared) -> None:
    shared.client("ann").quota_set("/acme/ci", {"running": 0})  # every flow of /acme/ci waits for quota
    ids = {}
    for user in ("alice", "bob"):
        started = shared.as_user(user, "run", "--detach", "sleeper.flow")
        assert started.returncode == 0, started.stderr
        ids[user] = started.stdout.strip()
    for user in ("alice", "vic", "ann"):  # the owner, a viewer and an admin of the subtree may ask
        said = shared.as_user(user, "why", ids["alice"])
        assert said.returncode == 0 and said.stdout == "waiting for quota /acme/ci: 0 of 0 running flows\n", said.stderr
    refused(shared, "alice", "why", ids["bob"], says=f"flow {ids['bob']} is bob's: a member of /acme/ci sees only its own flows")
    inspected = shared.as_user("ann", "inspect", ids["bob"])
    assert "waiting for quota /acme/ci: 0 of 0 running flows" in inspected.stdout

    refused(shared, "vic", "cancel", "--quota", "/acme", "--all", "--yes", says="vic is a viewer of /acme and may not cancel flows")
    refused(shared, "alice", "cancel", "--quota", "/acme", "--all", "--yes", says="quota node /acme is outside your quota node /acme/ci")
    refused(shared, "ann", "run", "--quota", "/other", "--detach", "sleeper.flow", says="ann (admin of /acme) may not start flows in /other")
    refused(shared, "alice", "run", "--quota", "/acme", "--detach", "sleeper.flow", says="may not start flows in /acme")

    # a member's bulk cancel takes its own flows only; an admin's, the whole subtree
    done = shared.as_user("alice", "cancel", "--quota", "/acme/ci", "--all")
    assert done.returncode == 0 and done.stdout.startswith("cancelled 1 flow(s): ") and ids["alice"] in done.stdout
    assert shared.client("bob").get_flow(ids["bob"])["status"] == "pending"
    started = shared.as_user("ann", "run", "--quota", "/acme/ci", "--detach", "sleeper.flow")
    assert started.returncode == 0 and shared.client("ann").get_flow(started.stdout.strip())["quota"] == "/acme/ci"
    done = shared.as_user("ann", "cancel", "--quota", "/acme", "--all", "--yes")
    assert done.returncode == 0 and done.stdout.startswith("cancelled 2 flow(s): ")
    for flow_id in (ids["bob"], started.stdout.strip()):
        assert wait_until(lambda: shared.client("ann").get_flow(flow_id)["status"] in FINISHED)
    said = shared.as_user("bob", "why", ids["bob"])
    assert said.stdout == "not waiting: it cancelled\n"


def test_limits_survive_a_restart_of_the_shared_grid(shared: Shared) -> None:
    shared.client("ann").quota_set("/acme/ci", {"running": 2, "rate": 30, "share": 3, "journal_bytes": 10**6})
    before = shared.client("vic").quota_show("/acme/ci")
    stop_grid(shared.paths)
    shared.start()
    after = json.loads(shared.as_user("alice", "quota", "show", "/acme/ci", "--json").stdout)
    assert after["limits"] == before["limits"] == {"running": 2, "rate": 30, "live": 5, "resources": 3,
                                                   "journal_bytes": 10**6}
    assert after["share"] == 3 and after["effective"] == before["effective"]
    refused(shared, "alice", "quota", "set", "/acme/ci", "--running", "none", says="may not set the limits")
