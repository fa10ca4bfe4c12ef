"""A grid over a real PostgreSQL server (a private cluster the session starts), laid out as a shared
grid is: `grid up --db postgresql://... --no-workers` with two Worker API replicas, and workers as
separate `flowmetal worker` processes with their own FLOWMETAL_HOME (only the Worker API URLs and a
copy of the token file shared).

On it: the seed examples (the templates' and the tutorial's tests, imported and run against this
module's grid), the fault workload with a SIGKILL of a worker and of the whole grid mid-flow (no
flow lost, no recorded request performed twice; tests/integration/fault_workload.py checks), and
a PostgreSQL server that goes away (503 db_unavailable with Retry-After, then the grid goes on).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from grid_local.api.worker_auth import TOKEN_ENV
from grid_local.home import GridPaths
from grid_local.layout import COMPONENTS, Layout
from grid_local.supervisor import start_background
from tests.integration.conftest import Grid, grid_env, stop_grid
from tests.integration.fault_workload import FaultRun, Kill, SlowCountingServer
from tests.integration.spread import wait_until
from tests.integration.test_remote_workers import free_port_pair
from tests.integration.test_templates_grid import (  # noqa: F401 (the seed examples, run on this module's grid)
    rest_apis,
    test_batch_given_jobs_with_a_failure,
    test_batch_samples,
    test_hello,
    test_rest_copies_records_with_retries,
    test_webhook_reacts_to_sent_messages,
)
from tests.integration.test_tutorial import test_the_tutorial_runs_as_written  # noqa: F401
from tests.postgres_cluster import Cluster, postgres_cluster, start_cluster  # noqa: F401 (a session fixture)

pytestmark = pytest.mark.timeout(420)

WORKERS = ("far-1", "far-2")


@dataclass
class PgGrid:
    """A grid on machine A over PostgreSQL, and its workers as started on machine B (another home)."""

    grid: Grid
    layout: Layout
    machine_b: dict[str, str]
    token_file: Path
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        urls = ",".join(self.grid.paths.read_state()["worker_urls"])  # type: ignore[index]
        with open(self.logs / f"{name}.log", "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "flowmetal_cli", "worker", "--url", urls, "--token-file", str(self.token_file),
                 "--name", name, "--slots", "16", "--worker-memory", "512"],
                env=self.machine_b, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.workers.append(process)
        return process

    def remote_workers(self, count: int) -> list[dict[str, Any]]:
        return wait_until(lambda: len(found := [p for p in self.grid.client.processes() if p.get("remote")]) >= count
                          and found, 90, f"{count} remote workers")

    def close(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.kill()
            process.wait(10)
        self.grid.client.close()
        stop_grid(self.grid.paths)


def start_pg_grid(tmp: Path, url: str) -> PgGrid:
    env = {**grid_env(tmp / "machine-a"), "PYTHONUNBUFFERED": "1"}
    env.pop(TOKEN_ENV, None)
    paths = GridPaths(Path(env["FLOWMETAL_HOME"]), url)
    (tmp / "machine-b").mkdir(parents=True)
    kept = tmp / "machine-b" / "worker-api.token"  # kept across grid restarts: the workers hold this copy
    kept.write_text("p" * 40 + "\n")
    layout = Layout(components=frozenset(COMPONENTS) - {"workers"}, worker_apis=2, worker_port=free_port_pair(),
                    worker_token_file=kept)
    state = start_background(paths, workers=1, layout=layout, timeout=90)
    project = tmp / "project"
    project.mkdir(exist_ok=True)
    (project / "flowmetal.toml").write_text('[project]\nname = "pg"\n')
    machine_b = {**grid_env(tmp / "machine-b"), "PYTHONUNBUFFERED": "1"}
    machine_b.pop(TOKEN_ENV, None)
    found = PgGrid(Grid(paths, state, env, project), layout, machine_b, kept, tmp / "machine-b")
    try:
        for name in WORKERS:
            found.start_worker(name)
        found.remote_workers(len(WORKERS))
    except BaseException:
        found.close()
        raise
    return found


@pytest.fixture(scope="module")
def pg_grid(tmp_path_factory: pytest.TempPathFactory, postgres_cluster: Cluster) -> Iterator[PgGrid]:  # noqa: F811
    made = start_pg_grid(tmp_path_factory.mktemp("pg-grid"), postgres_cluster.fresh_database())
    try:
        yield made
    finally:
        made.close()
    for name in WORKERS:
        assert "Traceback" not in (made.logs / f"{name}.log").read_text()


@pytest.fixture(scope="module")
def grid(pg_grid: PgGrid) -> Grid:
    """The grid the imported seed-example tests run on."""
    return pg_grid.grid


def test_the_grid_runs_over_postgresql(pg_grid: PgGrid) -> None:
    state = pg_grid.grid.paths.read_state()
    assert state is not None and state["db"].startswith("postgresql://postgres@127.0.0.1:"), state
    assert len(state["worker_urls"]) == 2
    assert not (pg_grid.grid.paths.home / "flow.db").exists(), "an SQLite Flow DB was made beside PostgreSQL"
    health = httpx.get(pg_grid.grid.url + "/v1/health", timeout=10).json()
    assert health["db"] == state["db"]
    status = pg_grid.grid.cli("grid", "status", "--json")
    assert status.returncode == 0 and state["db"] in status.stdout


@pytest.fixture
def own_grid(tmp_path: Path, postgres_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[PgGrid]:  # noqa: F811
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    made = start_pg_grid(tmp_path, postgres_cluster.fresh_database())
    for key in ("FLOWMETAL_HOME", "FLOWMETAL_CONFIG", "FLOWMETAL_CONTEXT"):
        monkeypatch.setenv(key, made.grid.env[key])
    try:
        yield made
    finally:
        made.close()


@pytest.mark.parametrize("kind", ["worker", "everything"])
def test_no_flow_lost_and_nothing_performed_twice_on_postgresql(kind: str, own_grid: PgGrid) -> None:
    """SIGKILL of one remote worker, or of every process of the grid's machine (the supervisor, both
    Worker API replicas, the Client API, the connectors) which is then started again with the same
    layout: the remote workers come back to it, and every flow ends as it must."""
    server = SlowCountingServer(delay=0.3)
    run = FaultRun(own_grid.grid.paths, own_grid.grid.project, server, roots=16, nap=0.3, layout=own_grid.layout)
    try:
        run.start()
        if kind == "worker":
            held = wait_until(lambda: [p for p in run.processes() if p.get("remote") and p["flows"]], 90,
                              "a remote worker holding flows")
            victim = own_grid.workers[WORKERS.index(held[0]["name"])]
            victim.kill()
            victim.wait(10)
            run.kill = Kill("worker", time.time(), [victim.pid])
            run.send(lambda n: n % 2 == 1)
        else:
            run.inflict("everything")
        run.wait_done(300)
        report = run.report()
    finally:
        run.close()
        server.close()
    assert report.kill is not None and report.kill.pids, "nothing was killed"
    assert not report.problems, f"after killing {kind}:\n" + "\n".join(report.problems[:12])
    if kind == "everything":
        assert report.kill.restarted_at is not None


def test_a_postgresql_server_that_goes_away_answers_503_and_the_grid_goes_on(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    cluster = start_cluster()  # its own server: this test stops it
    made: PgGrid | None = None
    try:
        made = start_pg_grid(tmp_path, cluster.fresh_database())
        grid = made.grid
        script = grid.write("hi.flow", 'if __name__ == "__flow__":\n    print("hi")\n')
        assert grid.wait(grid.start(script))["status"] == "completed"

        assert cluster.pg_ctl("stop").returncode == 0
        answer = httpx.get(grid.url + "/v1/flows", timeout=30)
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert body["error"] == "db_unavailable" and "is unavailable" in body["message"], body
        assert answer.headers["retry-after"]
        cli = grid.cli("ps")
        assert cli.returncode != 0 and "Traceback" not in cli.stderr, cli

        cluster.start()
        flow_id = wait_until(lambda: _try_start(grid, script), 60, "the Client API to answer again")
        assert grid.wait(flow_id, timeout=90)["status"] == "completed"
        logs = "".join(p.read_text() for p in (grid.paths.home / "logs").glob("*.log"))
        assert "Traceback" not in logs, logs[-3000:]
    finally:
        if made is not None:
            made.close()
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


def _try_start(grid: Grid, script: Path) -> str | None:
    try:
        return grid.start(script)
    except Exception:
        return None


def test_grid_up_on_a_database_that_does_not_answer_says_so_in_one_line(tmp_path: Path) -> None:
    env = grid_env(tmp_path)
    url = f"postgresql://flowmetal@127.0.0.1:{free_port_pair()}/flowmetal"
    done = subprocess.run([sys.executable, "-m", "flowmetal_cli", "grid", "up", "--db", url], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"the Flow DB {url} is unavailable" in errors[0], done.stderr
    assert not (tmp_path / "home" / "grid.json").exists()

    usage = subprocess.run([sys.executable, "-m", "flowmetal_cli", "grid", "up", "--db", "mysql://x/y"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "--db takes a postgresql://USER@HOST:PORT/DB URL" in usage.stderr, usage
