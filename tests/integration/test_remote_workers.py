"""Workers and connectors on "another machine": separate `flowmetal worker` / `flowmetal connector`
processes with their own FLOWMETAL_HOME, sharing with the grid only its Worker API URLs and a copy
of its token file, against a grid started with --no-workers and two Worker API replicas.

The kills are SIGKILLs of real processes: one Worker API replica mid-run (the workers go on through
the other URL, and the supervisor restarts it), one remote worker (its flows resume on the other
once their leases expire). The fault matrix's workload (tests/integration/fault_workload.py) and its
checks say whether any flow was lost or any recorded request performed twice.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowmetal_cli.bundle import build_bundle
from flowmetal_cli.client import GridClient
from grid_local.api.worker_auth import TOKEN_ENV, TOKEN_FILE
from grid_local.home import GridPaths, pid_alive
from grid_local.layout import COMPONENTS
from grid_local.supervisor import free_port
from tests.helpers import write_file
from tests.integration.conftest import FINISHED, grid_env, stop_grid
from tests.integration.fault_workload import FaultRun, Kill, SlowCountingServer
from tests.integration.spread import Spread, kill_replica, remote_workers, start_spread, stop_spread, wait_until

pytestmark = pytest.mark.timeout(420)


@pytest.fixture
def spread_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    made: list[Spread] = []

    def make(components: frozenset[str] = frozenset(COMPONENTS) - {"workers"}, workers: int = 0) -> Spread:
        spread = start_spread(tmp_path, components, workers)
        made.append(spread)
        return spread

    try:
        yield make
    finally:
        for spread in made:
            stop_spread(spread)


def fault_run(spread: Spread, server: SlowCountingServer, roots: int) -> FaultRun:
    return FaultRun(spread.paths, spread.project, server, roots=roots, nap=0.3)


def assert_clean(run: FaultRun, timeout: float = 240.0) -> None:
    run.wait_done(timeout)
    report = run.report()
    assert report.problems == [], "\n".join(report.problems)


def test_remote_workers_go_on_through_the_other_replica_when_one_is_killed(spread_factory: Any) -> None:
    spread: Spread = spread_factory()
    assert [p["name"] for p in spread.grid_processes() if p["role"] == "worker-api"] == ["worker-api-1", "worker-api-2"]
    assert not [p for p in spread.grid_processes() if p["role"] == "worker"]
    logs = [spread.worker(f"far-{n}")[1] for n in (1, 2)]
    remote_workers(spread, 2)
    machine_a = {**spread.env, "FLOWMETAL_HOME": str(spread.paths.home)}
    status = json.loads(grid_cli(machine_a, "grid", "status", "--json").stdout)
    elsewhere = sorted(p["name"] for p in status["processes"] if p.get("remote"))
    assert elsewhere == ["far-1", "far-2"] and status["worker_urls"] == spread.urls, status
    table = grid_cli(machine_a, "grid", "status").stdout
    assert "far-1" in table and "(elsewhere)" in table, table
    server = SlowCountingServer(delay=0.3)
    try:
        run = fault_run(spread, server, roots=12)
        run.start()
        run.wait_busy(None)
        # Every remote process starts on the first URL and stays on the one that answers.
        killed = kill_replica(spread, "worker-api-1")
        run.kill = Kill("worker-api", time.time(), [int(killed["pid"])])
        run.send(lambda n: n % 2 == 1)
        assert_clean(run)
    finally:
        server.close()
    for log in logs:
        text = log.read_text()
        assert "is unreachable" in text and f"going on through {spread.urls[1]}" in text, text
        assert "Traceback" not in text, text
    # The supervisor started the replica again, on its own port (the URL list stays valid).
    wait_until(lambda: any(p["name"] == "worker-api-1" and p["restarts"] >= 1 and pid_alive(p["pid"])
                           for p in spread.grid_processes()), 30, "worker-api-1 restarted")


def test_a_killed_remote_worker_s_flows_resume_on_the_other(spread_factory: Any) -> None:
    spread: Spread = spread_factory()
    victim, _ = spread.worker("doomed")
    survivor_log = spread.worker("survivor")[1]
    remote_workers(spread, 2)
    server = SlowCountingServer(delay=0.3)
    try:
        run = fault_run(spread, server, roots=12)
        run.start()
        with spread.client() as client:
            held = wait_until(lambda: [p for p in client.processes() if p.get("remote") and p["flows"]
                                       and p["name"] == "doomed"], 90, "the doomed worker to hold flows")
        held_flows = list(held[0]["held_flows"])
        victim.kill()
        victim.wait(10)
        run.kill = Kill("worker", time.time(), [victim.pid])
        run.send(lambda n: n % 2 == 1)
        assert_clean(run)
    finally:
        server.close()
    with spread.client() as client:
        for flow_id in held_flows:  # each was moved on when its lease expired, and finished elsewhere
            flow = client.get_flow(flow_id)
            assert flow["status"] == "completed", flow
        listed = [p["name"] for p in client.processes() if p.get("remote")]
    assert "survivor" in listed
    wait_until(lambda: "doomed" not in [p["name"] for p in GridClient(spread.state["url"]).processes()
                                        if p.get("remote")], 30, "the killed worker to drop out of the list")
    assert "Traceback" not in survivor_log.read_text()


LOST_ANSWER = """
def _child_impl(fctx):
    return fctx.args.n * 10

child = flow(implementation = _child_impl)

if __name__ == "__flow__":
    a = fctx().actions
    a.receive(timeout = 600)
    print("child gave", child(n = 4))
"""


def test_an_append_whose_answer_was_lost_with_its_replica_is_answered_by_the_other(spread_factory: Any) -> None:
    """The worker's `run` append is committed on replica 1 and its answer held back (a delay
    injection); replica 1 is SIGKILLed; the worker sends the same append to replica 2, which answers
    with the recorded child instead of refusing it: one child, and the flow completes."""
    spread: Spread = spread_factory()
    log = spread.worker("only")[1]
    remote_workers(spread, 1)
    script = write_file(spread.project, "lost.flow", LOST_ANSWER)
    built = build_bundle(script)
    with spread.client() as client:
        client.upload_bundle(built.data, built.digest)
        flow_id = str(client.start_flow(built.digest, {}, name="lost.flow")["id"])
        wait_until(lambda: [e for e in client.get_flow(flow_id)["journal"] if e["kind"] == "receive"], 60,
                   "the flow to wait in receive")
        client.inject(flow_id, "delay", 600)
        client.send(flow_id, "go")
        wait_until(lambda: [e for e in client.get_flow(flow_id)["journal"] if e["kind"] == "run"], 60,
                   "the run request to be committed (its answer held back)")
        kill_replica(spread, "worker-api-1")
        done = wait_until(lambda: (f := client.get_flow(flow_id))["status"] in FINISHED and f, 90,
                          "the flow to finish through replica 2")
        assert done["status"] == "completed", done
        children = [f for f in client.list_flows(limit=100) if f.get("parent") == flow_id]
        assert len(children) == 1 and children[0]["status"] == "completed", children
        lines = [e["text"] for e in client.events(after=0, root=flow_id)["events"] if e["type"] == "log"]
    assert lines == ["child gave 40"]
    assert f"going on through {spread.urls[1]}" in log.read_text()


def test_a_remote_http_connector_performs_the_grids_requests(spread_factory: Any) -> None:
    """No connectors on the grid's machine: clock and http run on machine B."""
    spread: Spread = spread_factory(frozenset({"client-api", "worker-api"}))
    spread.worker("w")
    logs = [spread.connector(role)[1] for role in ("http", "clock")]
    remote_workers(spread, 1)
    server = SlowCountingServer(delay=0.0)
    script = write_file(spread.project, "fetch.flow", """
        if __name__ == "__flow__":
            a = fctx().actions
            a.sleep(0.2)
            r = a.http("GET", fctx().args.url + "/hello/" + str(fctx().args.n))
            print(r.json["path"], r.json["count"])
        """)
    built = build_bundle(script)
    try:
        with spread.client() as client:
            client.upload_bundle(built.data, built.digest)
            ids = [str(client.start_flow(built.digest, {"url": server.url, "n": n}, name="fetch.flow")["id"])
                   for n in range(4)]
            for n, flow_id in enumerate(ids):
                flow = wait_until(lambda f=flow_id: (got := client.get_flow(f))["status"] in FINISHED and got, 90,
                                  f"flow {flow_id}")
                assert flow["status"] == "completed", flow
                lines = [e["text"] for e in client.events(after=0, root=flow_id)["events"] if e["type"] == "log"]
                assert lines == [f"/hello/{n} 1"]
                # (performed on machine B: the grid's machine runs no connector at all)
                assert [e["kind"] for e in flow["journal"]].count("http") == 1
    finally:
        server.close()
    assert [server.count(f"/hello/{n}") for n in range(4)] == [1, 1, 1, 1]
    for log in logs:
        assert "Traceback" not in log.read_text()


def call(url: str, path: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_wrong_token_is_refused_and_health_is_the_only_open_route(spread_factory: Any, tmp_path: Path) -> None:
    spread: Spread = spread_factory(frozenset({"worker-api"}))
    assert spread.state["url"] is None and len(spread.urls) == 2
    url = spread.urls[0]
    assert call(url, "/v1/health")[0] == 200
    token = spread.token_file.read_text().strip()
    for path in ("/v1/workers", "/v1/connectors/clock/deadlines", "/v1/bundles/sha256:" + "0" * 64, "/v1/nowhere"):
        status, body = call(url, path)
        assert status == 401 and body["error"] == "unauthorized", (path, status, body)
        assert call(url, path, "not-the-token-of-this-grid")[0] == 401
    assert call(url, "/v1/workers", token) == (200, {"workers": []})

    wrong = tmp_path / "wrong.token"
    wrong.write_text("this-is-not-the-grid-credential\n")
    for command in (["worker"], ["connector", "http"]):
        done = subprocess.run([sys.executable, "-m", "flowmetal_cli", *command, "--url", ",".join(spread.urls),
                               "--token-file", str(wrong)], env=spread.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 4, done
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "refused this process's credential (401)" in errors[0], done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args, message", [
    (["worker", "--url", "grid.example.com:8471", "--token-file", "{token}"], "--url takes http://HOST:PORT"),
    (["worker", "--url", "http://127.0.0.1:1"], "needs the grid's credential"),
    (["worker", "--url", "http://127.0.0.1:1", "--token-file", "{short}"], "at least 16 characters"),
    (["connector", "smtp", "--url", "http://127.0.0.1:1", "--token-file", "{token}"], "no connector 'smtp'"),
    (["worker", "--url", "http://127.0.0.1:1", "--token-file", "{token}", "--slots", "0"], "--slots"),
])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "token").write_text("a" * 32)
    (tmp_path / "short").write_text("abc")
    env = {**grid_env(tmp_path)}
    env.pop(TOKEN_ENV, None)
    argv = [a.format(token=tmp_path / "token", short=tmp_path / "short") for a in args]
    done = subprocess.run([sys.executable, "-m", "flowmetal_cli", *argv], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_worker_started_before_its_grid_waits_for_it_saying_so(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("a" * 32)
    env = {**grid_env(tmp_path), "PYTHONUNBUFFERED": "1"}
    env.pop(TOKEN_ENV, None)
    url = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "flowmetal_cli", "worker", "--url", url, "--token-file",
                                    str(tmp_path / "token")], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "retrying until it is back" in log.read_text(), 60, "the worker to say it retries")
        assert process.poll() is None, log.read_text()
    finally:
        process.kill()
        process.wait(10)


def grid_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "flowmetal_cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.mark.parametrize("args, message", [
    (["--only", "workers"], "workers need this grid's worker-api too"),
    (["--only", "client-api,dns"], "--only takes client-api, worker-api, connectors, workers or api, not 'dns'"),
    (["--worker-listen", "8471"], "--worker-listen takes HOST:PORT, not '8471'"),
    (["--worker-apis", "0"], "--worker-apis"),
])
def test_grid_up_refuses_what_cannot_make_a_grid(tmp_path: Path, args: list[str], message: str) -> None:
    env = grid_env(tmp_path)
    done = grid_cli(env, "grid", "up", *args)
    assert done.returncode == 2 and message in done.stderr, done
    assert not (tmp_path / "home" / "grid.json").exists()


def free_port_pair() -> int:
    """A port P with P+1 free too (for two replicas on consecutive ports)."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


def test_grid_up_only_the_apis_on_a_worker_listen_port(tmp_path: Path) -> None:
    env = grid_env(tmp_path)
    env.pop(TOKEN_ENV, None)
    kept = tmp_path / "kept.token"
    kept.write_text("k" * 40 + "\n")
    port = free_port_pair()
    paths = GridPaths(tmp_path / "home")
    try:
        up = grid_cli(env, "grid", "up", "--only", "api", "--worker-apis", "2", "--worker-listen",
                      f"127.0.0.1:{port}", "--worker-token-file", str(kept))
        assert up.returncode == 0, up.stderr
        urls = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
        assert f"worker API {','.join(urls)}, credential in" in up.stdout, up.stdout
        state = paths.read_state()
        assert state is not None and state["worker_urls"] == urls
        assert state["components"] == ["client-api", "worker-api"]
        assert sorted(p["role"] for p in state["processes"]) == ["client-api", "supervisor", "worker-api", "worker-api"]
        assert (paths.home / TOKEN_FILE).read_text() == "k" * 40  # the kept credential, not a fresh one
        for url in urls:
            assert call(url, "/v1/workers", "k" * 40) == (200, {"workers": []})
        status = json.loads(grid_cli(env, "grid", "status", "--json").stdout)
        assert status["worker_urls"] == urls and status["healthy"] is True
    finally:
        stop_grid(paths)
