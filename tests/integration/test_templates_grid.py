"""Every template, generated with `flowmetal new` and run as generated with `flowmetal run --context=local`.

One local grid for the module; templates that call HTTP are pointed (with --arg) at loopback
servers that count what they receive, and the webhook listener is driven with `flowmetal send`.
The ci template runs its jobs in containers on a real Docker Engine (skipped, saying why, without one).
"""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from grid_local.home import GridPaths
from grid_local.supervisor import start_background
from grid_local.triggers.signatures import sign
from tests.integration.conftest import CountingServer, Grid, LoopbackServer, QuietJsonHandler, grid_env, stop_grid
from tests.integration.docker_engine import Engine

TEMPLATES = ["hello", "ci", "webhook", "rest", "batch"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    """A local grid shared by the module's tests (each test scaffolds its own project folder)."""
    tmp = tmp_path_factory.mktemp("templates")
    env = {**grid_env(tmp), "PYTHONUNBUFFERED": "1"}
    paths = GridPaths(Path(env["FLOWMETAL_HOME"]))
    projects = tmp / "projects"
    projects.mkdir()
    found: Grid | None = None
    try:
        found = Grid(paths, start_background(paths, workers=2), env, projects)
        yield found
    finally:
        if found is not None:
            found.client.close()
        stop_grid(paths)


def scaffold(grid: Grid, template: str, name: str | None = None) -> Path:
    name = name or f"my-{template}"
    done = grid.cli("new", name, "--template", template)
    assert done.returncode == 0, done.stderr
    entry = grid.project / name / "main.flow"
    assert entry.is_file()
    return entry


def run(grid: Grid, entry: Path, *args: str) -> Any:
    done = grid.cli("run", "--context=local", *args, str(entry))
    assert '.py", line' not in done.stderr, done.stderr  # no Python traceback (Starlark's are expected)
    return done


class RestApis(LoopbackServer):
    """A source API (GET /items: a JSON list; the first GET answers 503) and a target (POST /records)."""

    def __init__(self, items: int = 7) -> None:
        self.items = [{"id": n, "title": f"item {n}", "completed": n % 2 == 0} for n in range(1, items + 1)]
        self.gets = 0
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(QuietJsonHandler):
            def do_GET(self) -> None:  # noqa: N802
                with outer.lock:
                    outer.gets += 1
                    first = outer.gets == 1
                if first:
                    self.send_json(503, {"error": "warming up"})
                else:
                    self.send_json(200, outer.items)

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"null")
                if self.path.startswith("/broken"):
                    self.send_json(500, {"error": "down"})
                    return
                with outer.lock:
                    outer.records.append((self.headers.get("idempotency-key", ""), body))
                self.send_json(201, {"saved": body["external_id"]})

        super().__init__(Handler)


@pytest.fixture
def rest_apis() -> Iterator[RestApis]:
    apis = RestApis()
    try:
        yield apis
    finally:
        apis.close()


def test_hello(grid: Grid) -> None:
    done = run(grid, scaffold(grid, "hello"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"Hello from Flowmetal, {getpass.getuser()}!\n"


def commit_all(folder: Path, message: str) -> None:
    """Make ``folder`` a git repository (once) and commit everything in it."""
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(folder), "-c", "user.name=ci", "-c", "user.email=ci@example.invalid", *args],
                       check=True, capture_output=True)
    if not (folder / ".git").exists():
        git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", message)


def test_ci_runs_each_job_in_its_own_container(grid: Grid, http_server: CountingServer, docker_engine: Engine) -> None:
    entry = scaffold(grid, "ci")
    commit_all(entry.parent, "first")
    done = run(grid, entry, "--arg", f"repo={entry.parent}", "--arg", f"image={docker_engine.image}",
               "--arg", f"status_url={http_server.url}/status")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "pipeline passed"
    assert any(line.startswith(f"pipeline | checkout {entry.parent}@HEAD -> ") for line in lines)
    for job in ("build", "lint", "unit"):
        assert f"  PASS {job}" in lines
    # Each job's output was streamed to the log under its name.
    assert "unit | PASS tests/test_layout.sh" in lines and "lint | lint: 2 files clean" in lines
    assert any(line.startswith("build | ") and line.endswith("/tmp/dist/project.tar.gz") for line in lines)
    assert http_server.count("/status") == 1
    deadline = time.monotonic() + 20
    while docker_engine.containers_of(grid.paths.home) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not docker_engine.containers_of(grid.paths.home), "a job's container outlived the pipeline"


def test_ci_red_exits_one(grid: Grid, docker_engine: Engine) -> None:
    entry = scaffold(grid, "ci", "red-ci")
    (entry.parent / "lib" / "extra.star").write_text("X = 1  \n")  # trailing whitespace: lint fails
    commit_all(entry.parent, "a lint error")
    done = run(grid, entry, "--arg", f"repo={entry.parent}", "--arg", f"image={docker_engine.image}",
               "--arg", "jobs=unit,lint")
    assert done.returncode == 1
    assert "  FAIL lint: exit code 1" in done.stdout and "  PASS unit" in done.stdout
    assert "lint | ./lib/extra.star:1:X = 1  " in done.stdout
    assert "build" not in done.stdout
    assert "pipeline failed: lint" in done.stderr


def test_rest_copies_records_with_retries(grid: Grid, rest_apis: RestApis) -> None:
    entry = scaffold(grid, "rest", "sync")
    done = run(grid, entry, "--arg", f"source_url={rest_apis.url}/items",
               "--arg", f"target_url={rest_apis.url}/records")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "copied 5 of 5 records"
    assert rest_apis.gets == 2  # the 503 was retried once
    keys = sorted(key for key, _ in rest_apis.records)
    assert keys == [f"sync-{n}" for n in range(1, 6)]  # one POST per record, each with its key
    assert {"external_id": "2", "title": "item 2", "done": True} in [body for _, body in rest_apis.records]


def test_rest_fails_when_the_target_stays_down(grid: Grid, rest_apis: RestApis) -> None:
    entry = scaffold(grid, "rest", "sync-down")
    done = run(grid, entry, "--arg", f"source_url={rest_apis.url}/items",
               "--arg", f"target_url={rest_apis.url}/broken", "--arg", "limit=1")
    assert done.returncode == 1
    assert "copied 0 of 1 records" in done.stdout
    assert "1 of 1 records could not be copied" in done.stderr


def test_batch_samples(grid: Grid) -> None:
    done = run(grid, scaffold(grid, "batch"), "--arg", "count=4", "--arg", "parallelism=2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["batch | 2 of 4 jobs done", "batch | 4 of 4 jobs done", "4 jobs: 4 ok, 0 failed"]


def test_batch_given_jobs_with_a_failure(grid: Grid, http_server: CountingServer) -> None:
    jobs = [{"id": "a", "n": 3}, {"id": "b", "url": f"{http_server.url}/batch"}, {"id": "c", "fail": True}]
    done = run(grid, scaffold(grid, "batch", "given"), "--args-json", json.dumps({"jobs": jobs, "parallelism": 2}))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["batch | 2 of 3 jobs done", "batch | 3 of 3 jobs done", "3 jobs: 2 ok, 1 failed"]
    assert lines[3].startswith("  c: ") and "job c was asked to fail" in lines[3]
    assert http_server.count("/batch") == 1


def wait_for_log(grid: Grid, flow_id: str, text: str, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = grid.logs(flow_id)
        if any(text in line for line in lines):
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {grid.logs(flow_id)}")


def test_webhook_reacts_to_sent_messages(grid: Grid, http_server: CountingServer) -> None:
    entry = scaffold(grid, "webhook", "hooks")
    started = run(grid, entry, "--detach", "--arg", f"notify_url={http_server.url}/notify")
    assert started.returncode == 0, started.stderr
    flow_id = started.stdout.strip()
    wait_for_log(grid, flow_id, "listening on inbox _stdin")
    for message in ('{"type": "ping"}', '{"type": "push", "repo": "acme/api", "ref": "main"}',
                    '{"type": "deploy"}', '{"type": "stop"}'):
        sent = grid.cli("send", flow_id, message)
        assert sent.returncode == 0, sent.stderr
        time.sleep(0.05)  # messages are delivered in order anyway; this keeps the log easy to read
    flow = grid.wait(flow_id)
    assert flow["status"] == "completed", flow
    logs = grid.logs(flow_id)
    assert logs == [f"hooks listening on inbox _stdin of flow {flow_id}", "reply: pong", "build: build acme/api@main",
                    "ignore: no reaction to events of type 'deploy'", "stopping: asked to", "handled 3 events"]
    assert http_server.count("/notify") == 2  # ignored events are not posted


def test_webhook_idle_timeout_ends_an_attached_run(grid: Grid) -> None:
    done = run(grid, scaffold(grid, "webhook", "idle"), "--arg", "idle_timeout=0.5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("idle listening on inbox _stdin of flow ")
    assert lines[1].startswith("stopping: ") and lines[2] == "handled 0 events"


def test_webhook_template_as_a_signed_webhook(grid: Grid, http_server: CountingServer) -> None:
    """Pushed as generated, the template's declared hook feeds its listener's inbox."""
    entry = scaffold(grid, "webhook", "gh")
    env = {**grid.env, "WEBHOOK_SECRET": "template-secret"}
    pushed = subprocess.run([sys.executable, "-m", "flowmetal_cli", "push", "--name", "gh", str(entry)], env=env,
                            capture_output=True, text=True, timeout=60, cwd=grid.project)
    assert pushed.returncode == 0 and "hook gh -> deployment gh" in pushed.stdout, pushed.stderr
    flow_id = grid.client.start_deployment("gh", {"notify_url": f"{http_server.url}/notify"})["id"]
    wait_for_log(grid, flow_id, "listening on inbox _stdin")
    for n, event in enumerate(("ping", "push", "push", "stop")):
        body = (entry.parent / "events" / f"{event}.json").read_bytes()
        key = "push-1" if event == "push" else f"{event}-{n}"  # the second push is a redelivery
        answer = httpx.post(f"{grid.url}/hooks/gh", content=body, timeout=30,
                            headers={"X-Signature-256": sign("template-secret", body), "Idempotency-Key": key})
        assert answer.status_code == 202 and answer.json()["flow_ids"] == [flow_id], answer.text
    assert grid.wait(flow_id)["status"] == "completed"
    assert grid.logs(flow_id)[1:] == ["reply: pong", "build: build acme/api@main", "stopping: asked to", "handled 2 events"]
    assert http_server.count("/notify") == 2


def test_batch_template_runs_on_its_schedule(grid: Grid) -> None:
    entry = scaffold(grid, "batch", "nightly")
    pushed = grid.cli("push", "--name", "nightly", str(entry))
    assert pushed.returncode == 0 and "schedule nightly-nightly -> deployment nightly" in pushed.stdout, pushed.stderr
    [schedule] = [s for s in grid.client.schedules() if s["name"] == "nightly-nightly"]
    assert schedule["cron"] == "0 2 * * *" and schedule["args"] == {"count": 6, "parallelism": 3}
    assert time.gmtime(schedule["next_fire"])[3:6] == (2, 0, 0) and schedule["next_fire"] > time.time()
    fired = grid.cli("schedule", "trigger", "nightly-nightly")
    assert fired.returncode == 0, fired.stderr
    flow_id = fired.stdout.strip()
    assert grid.wait(flow_id)["status"] == "completed"
    assert grid.logs(flow_id)[-1] == "6 jobs: 6 ok, 0 failed"


def test_every_template_is_covered() -> None:
    listed = Path(__file__).resolve().parents[2] / "templates"
    assert sorted(p.name for p in listed.iterdir() if p.is_dir()) == sorted(TEMPLATES)
