"""The local grid's supervisor: starts the APIs, workers and connectors as OS processes and keeps them up.

A child that dies is restarted with backoff, and the Worker API is told at once so that the
dead worker's flows are replayed elsewhere (and a dead connector's in-flight requests declared
interrupted) without waiting for lease expiry. The supervisor publishes the grid's URLs and
processes in ``$FLOWMETAL_HOME/grid.json``; it holds ``grid.lock`` while it runs, and children
are bound to it with PR_SET_PDEATHSIG so none outlives it.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from grid_local.api.wire import WireClient, WireError
from grid_local.api.worker_auth import TOKEN_ENV, auth_headers, new_token
from grid_local.connectors import sandbox
from grid_local.home import GridPaths, die_with_parent, is_supervisor_of, pid_alive, process_identity
from grid_local.isolation import SANDBOX_CHOICES, Isolation
from grid_local.layout import Layout, read_token_file
from grid_local.worker.settings import WorkerSettings

RESTART_BACKOFF_MAX = 5.0
STABLE_AFTER = 10.0


def last_line(path: Path, offset: int = 0, marker: str = "") -> str:
    """The last non-empty line written to a log after ``offset`` (containing ``marker``, when given)."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip() and marker in line), "")


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_supervisor(address_space: int | None = None) -> None:
    """Runs in the child before exec: SIGKILL it when the supervisor dies, however it dies; cap a
    worker's address space (RLIMIT_AS), so that a flow cannot take the machine's memory."""
    die_with_parent()
    os.setpgid(0, 0)
    if address_space is not None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))


@dataclass
class Child:
    role: str
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = 0.1
    restart_at: float | None = None
    log: IO[bytes] | None = None
    log_offset: int = 0
    """Where this incarnation's output starts in its log (what it said before it died is read from here)."""

    def last_words(self, limit: int = 16384) -> str:
        if self.log is None:
            return ""
        self.log.flush()
        try:
            with open(self.log.name, "rb") as log:
                log.seek(max(self.log_offset, os.path.getsize(self.log.name) - limit))
                return log.read(limit).decode("utf-8", "replace")
        except OSError:
            return ""

    @property
    def ident(self) -> str:
        """How the Worker API knows this incarnation (workers' lease owner, connectors' executor)."""
        return f"{self.name}.{self.process.pid}" if self.process else self.name

    def describe(self) -> dict[str, Any]:
        return {
            "role": self.role, "name": self.name, "pid": self.process.pid if self.process else None,
            "id": self.ident, "started": self.started, "restarts": self.restarts,
        }


API_ROLES = ("worker-api", "client-api")


class Supervisor:
    def __init__(self, paths: GridPaths, workers: int, host: str, client_port: int, tokens: Path | None,
                 worker_settings: WorkerSettings | None = None, clock: str = "real",
                 layout: Layout | None = None, isolation: Isolation | None = None) -> None:
        self.paths = paths
        self.isolation = isolation or Isolation.for_grid(host, bool(tokens))
        self.clock = clock  # the time flows see: real, or virtual (grid_local/db/clock.py)
        self.layout = layout or Layout()
        self.workers = workers if self.layout.has("workers") else 0
        self.worker_settings = worker_settings or WorkerSettings()
        self.host = host
        self.fixed_client_port = bool(client_port)
        self.client_port = client_port or free_port(host if host != "0.0.0.0" else "127.0.0.1")
        self.tokens = tokens
        self.children: list[Child] = []
        self.stopping = False
        self._client_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.client_url = f"http://{self._client_host}:{self.client_port}"
        self.pick_worker_ports()
        self._lock_file: IO[str] | None = None
        self._identity: dict[str, Any] | None = None

    def pick_worker_ports(self) -> None:
        """The Worker API replicas' ports: from --worker-listen (consecutive), or free ones."""
        layout = self.layout
        if layout.worker_port:
            self.worker_ports = [layout.worker_port + i for i in range(layout.worker_apis)]
        else:
            bind = layout.connect_host if layout.worker_host in ("0.0.0.0", "::", "") else layout.worker_host
            self.worker_ports = [free_port(bind) for _ in range(layout.worker_apis)]
        self.worker_urls = [f"http://{layout.connect_host}:{port}" for port in self.worker_ports]
        # The supervisor's own calls (reporting a child gone) go to every replica: each keeps its
        # own list of incarnations it must never hand a flow again.
        self.apis = [WireClient(url, timeout=5.0, patience=5.0) for url in self.worker_urls]

    @property
    def worker_url(self) -> str:
        return self.worker_urls[0]

    def log(self, message: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor: {message}", file=sys.stderr, flush=True)

    def acquire_lock(self) -> bool:
        """Take this home's lock; a grid.json left by a supervisor that died is removed under it."""
        self.paths.home.mkdir(parents=True, exist_ok=True)
        while True:
            lock_file = open(self.paths.lock, "w")
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock_file.close()
                return False
            try:
                same = os.fstat(lock_file.fileno()).st_ino == os.stat(self.paths.lock).st_ino
            except FileNotFoundError:
                same = False
            if same:  # (not a file a stopping supervisor unlinked after we opened it)
                break
            lock_file.close()
        self._lock_file = lock_file
        self.paths.state.unlink(missing_ok=True)
        return True

    def plan(self) -> None:
        """The children this grid starts: its APIs first (``api_children``), then workers and connectors."""
        python = sys.executable
        home = str(self.paths.home)
        layout = self.layout
        replicas = len(self.worker_ports) if layout.has("worker-api") else 0
        client_poke = free_port(kind=socket.SOCK_DGRAM) if layout.has("client-api") else None
        worker_pokes = [free_port(kind=socket.SOCK_DGRAM) for _ in range(replicas)]
        every_poke = [port for port in (client_poke, *worker_pokes) if port]

        def peers(own: int) -> list[str]:  # each API pokes every other one after its commits
            return [arg for port in every_poke if port != own for arg in ("--peer-notify-port", str(port))]

        self.children = []
        db = ["--db", self.paths.db_url] if self.paths.db_url else []  # (else the home's SQLite file)
        for number, (port, poke) in enumerate(zip(self.worker_ports, worker_pokes), start=1):
            name = "worker-api" if replicas == 1 else f"worker-api-{number}"
            self.children.append(Child("worker-api", name, [
                python, "-m", "grid_local.api.serve", "worker", "--home", home, "--host", layout.worker_host,
                "--port", str(port), "--notify-port", str(poke), *peers(poke), *db, *self.isolation.argv()]))
        if client_poke:
            client = [python, "-m", "grid_local.api.serve", "client", "--home", home, "--host", self.host,
                      "--port", str(self.client_port), "--notify-port", str(client_poke), *peers(client_poke), *db]
            if self.tokens:
                client += ["--tokens", str(self.tokens)]
            self.children.append(Child("client-api", "client-api", client))
        urls = ",".join(self.worker_urls)
        for number in range(1, self.workers + 1):
            self.children.append(Child("worker", f"worker-{number}",
                                       [python, "-m", "grid_local.worker.main", "--api", urls,
                                        "--name", f"worker-{number}", *self.worker_settings.argv()],
                                       # glibc's per-thread arenas would reserve address space by the GiB
                                       env={"MALLOC_ARENA_MAX": "2"}))
        if layout.has("connectors"):
            for role in ("clock", "http", "inbox", "resources"):
                self.children.append(Child(f"connector:{role}", role,
                                           [python, "-m", f"grid_local.connectors.{role}", "--api", urls,
                                            "--name", role, "--home", home, *self.isolation.argv()]))

    @property
    def api_children(self) -> list[Child]:
        return [child for child in self.children if child.role in API_ROLES]

    @property
    def other_children(self) -> list[Child]:
        return [child for child in self.children if child.role not in API_ROLES]

    def spawn(self, child: Child) -> None:
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        if child.log is None:
            child.log = open(self.paths.logs / f"{child.name}.log", "ab")
        child.log_offset = os.fstat(child.log.fileno()).st_size
        env = {**os.environ, **child.env, "PYTHONUNBUFFERED": "1"}
        child.process = subprocess.Popen(
            child.argv, stdout=child.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=functools.partial(
                _die_with_supervisor, self.worker_settings.address_space_bytes if child.role == "worker" else None),
        )
        child.started = time.time()
        child.restart_at = None

    def wait_healthy(self, url: str, child: Child, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.process is not None and child.process.poll() is not None:
                cause = last_line(self.paths.logs / f"{child.name}.log", child.log_offset)
                raise RuntimeError(f"{child.name} exited with {child.process.returncode} while starting"
                                   + (f": {cause}" if cause else ""))
            try:
                if WireClient(url, timeout=1.0).request("GET", "/v1/health")[0] in (200, 401):
                    return
            except WireError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{url} did not become healthy within {timeout:g} s")

    def publish(self, status: str) -> None:
        self.paths.write_state({
            "status": status, "pid": os.getpid(), "identity": self._identity,
            "url": self.client_url if self.layout.has("client-api") else None,
            "worker_url": self.worker_url if self.layout.has("worker-api") else None,
            "worker_urls": self.worker_urls if self.layout.has("worker-api") else [],
            "components": sorted(self.layout.components),
            "db": self.paths.flow_db_label, "home": str(self.paths.home), "auth": bool(self.tokens), "clock": self.clock,
            "isolation": self.isolation.describe(),
            "processes": [
                {"role": "supervisor", "name": "supervisor", "pid": os.getpid(), "id": "supervisor",
                 "started": self._started, "restarts": 0},
                *[child.describe() for child in self.children],
            ],
        })

    def start(self, attempts: int = 3) -> None:
        self._started = time.time()
        self._identity = process_identity(os.getpid())
        if self.isolation.sandbox and self.layout.has("connectors"):
            sandbox.check_available()  # a grid that must sandbox exec does not start without one
        self.prepare_db()
        kept = read_token_file(self.layout.worker_token_file) if self.layout.worker_token_file else None
        # The Worker API's credential for this grid's life (or the one kept across its starts).
        self.worker_token = new_token(self.paths.home, kept)
        os.environ[TOKEN_ENV] = self.worker_token  # for its children, and its own Worker API client
        for client in self.apis:
            client.auth = {}  # made before the credential: they read it again on their next call
        for attempt in range(1, attempts + 1):
            self.plan()
            apis = self.api_children
            for child in apis:
                self.spawn(child)
            try:
                for child in apis:
                    url = self.client_url if child.role == "client-api" else self.worker_urls[apis.index(child)]
                    self.wait_healthy(url, child)
                break
            except RuntimeError as exc:
                # A free port picked here can be taken by another process before the API binds it.
                for child in apis:
                    if child.process and child.process.poll() is None:
                        child.process.kill()
                        child.process.wait()
                    if child.log:
                        child.log.close()
                # Other ports help unless the port that failed is the one the user asked for.
                if attempt == attempts or (self.fixed_client_port and str(exc).startswith("client-api ")):
                    raise
                if self.layout.worker_port and str(exc).startswith("worker-api"):
                    raise
                self.log(f"{exc}; retrying with other ports")
                if not self.layout.worker_port:
                    self.pick_worker_ports()
                if not self.fixed_client_port:
                    self.client_port = free_port()
                    self.client_url = f"http://{self._client_host}:{self.client_port}"
        for child in self.other_children:
            self.spawn(child)
        self.publish("ready")
        parts = [f"client API {self.client_url}" if self.layout.has("client-api") else "",
                 f"worker API {', '.join(self.worker_urls)}" if self.layout.has("worker-api") else "",
                 f"{self.workers} workers", "connectors" if self.layout.has("connectors") else "no connectors"]
        self.log(f"grid up: {', '.join(part for part in parts if part)}, db {self.paths.flow_db_label}")

    def prepare_db(self) -> None:
        """Check the Flow DB before any process uses it, and clear what the previous grid left held.

        Nothing of a previous grid instance survives it (its children die with its supervisor), so
        every flow it leased is runnable again and every request it had in flight is declared
        interrupted now, instead of after their leases expire.

        In a short-lived process of its own (``grid_local.db.startup``): the supervisor lives as long
        as the grid and need not carry the Flow DB's code to use it once. The target travels on
        stdin, since a PostgreSQL URL may hold a password."""
        target = self.paths.flow_db
        argv = [sys.executable, "-m", "grid_local.db.startup", "--clock", self.clock]
        done = subprocess.run(argv + (["--file"] if isinstance(target, Path) else []), input=str(target),
                              capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        if done.returncode != 0 or not lines:
            errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
            raise RuntimeError(errors[-1] if errors else f"preparing the Flow DB failed (exit {done.returncode}): "
                               f"{done.stderr.strip()[-500:]}")
        released = json.loads(lines[-1])
        flows, requests = released["flows"], released["requests"]
        if flows or requests:
            self.log(f"recovered from the previous grid: {flows} flows released, {requests} requests in flight "
                     "declared interrupted")

    def _report_gone(self, children: list[Child], died: str | None = None) -> None:
        """Tell the Worker API these incarnations are gone, so their flows and requests move on at once
        (``died``: how a worker crashed, counted against the flows it was evaluating)."""
        for child in children:
            if child.process is None:
                continue
            kind = "workers" if child.role == "worker" else "connectors" if child.role.startswith("connector:") else None
            if kind is None:
                continue
            for api in self.apis:
                try:
                    api.post(f"/v1/{kind}/{child.ident}/gone", {"died": died} if died and kind == "workers" else {})
                except WireError as exc:
                    self.log(f"could not report {child.ident} gone to {api.url}: {exc}")

    def on_exit(self, child: Child, code: int) -> None:
        """A child died: tell the Worker API, then schedule the restart with backoff."""
        last_words = child.last_words()
        died = describe_exit(code, last_words) if code < 0 and code != -signal.SIGTERM else None
        self.log(f"{child.name} (pid {child.process.pid if child.process else '?'}) exited with {code}"
                 + (f": {died}" if died else ""))
        self._report_gone([child], died if flow_could_cause(code, last_words) else None)
        ran = time.time() - child.started
        child.backoff = 0.1 if ran > STABLE_AFTER else min(child.backoff * 2, RESTART_BACKOFF_MAX)
        child.restart_at = time.monotonic() + (0.0 if child.role == "worker" and ran > 1.0 else child.backoff)
        child.process = None

    def loop(self) -> None:
        while not self.stopping:
            changed = False
            for child in self.children:
                if child.process is not None:
                    code = child.process.poll()
                    if code is not None:
                        self.on_exit(child, code)
                        changed = True
                elif child.restart_at is not None and time.monotonic() >= child.restart_at:
                    child.restarts += 1
                    self.spawn(child)
                    self.log(f"restarted {child.name} as pid {child.process.pid if child.process else '?'} "
                             f"(restart {child.restarts})")
                    changed = True
            if changed:
                self.publish("ready")
            time.sleep(0.02)

    def shutdown(self) -> None:
        self.stopping = True
        # Workers and connectors first, the APIs last.
        apis = self.api_children
        for group in (self.other_children, apis):
            for child in group:
                if child.process and child.process.poll() is None:
                    child.process.terminate()
            if group is not apis:
                self._report_gone(group)
            deadline = time.monotonic() + 5.0
            for child in group:
                if child.process is None:
                    continue
                try:
                    child.process.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
        for child in self.children:
            if child.log:
                child.log.close()
        self.paths.state.unlink(missing_ok=True)
        self.paths.lock.unlink(missing_ok=True)
        self.log("grid down")


_SIGNALS = {
    signal.SIGSEGV: "segmentation fault (SIGSEGV)",
    signal.SIGABRT: "aborted (SIGABRT)",
    signal.SIGBUS: "bus error (SIGBUS)",
    signal.SIGILL: "illegal instruction (SIGILL)",
    signal.SIGKILL: "killed (SIGKILL: by the kernel's out-of-memory killer, or by someone)",
}


def flow_could_cause(code: int, last_words: str = "") -> bool:
    """Whether a death may be the evaluated flows' doing, and so counts against them.

    A SIGKILL comes from outside (a person, failure injection, a test, the kernel's OOM killer):
    a worker dies that way through no fault of its flows, and "a worker that dies costs nothing".
    A flow's own runaway allocation hits the worker's address-space cap first and aborts with
    "memory allocation of ... failed", which counts, as do crashes (SIGSEGV, SIGABRT, ...)."""
    if code >= 0 or code == -signal.SIGTERM:
        return False
    return code != -signal.SIGKILL or "memory allocation of" in last_words


def describe_exit(code: int, last_words: str = "") -> str:
    """How a child process died, for people: its signal, and the cause it printed if it did."""
    if "memory allocation of" in last_words:
        allocation = last_words[last_words.rindex("memory allocation of"):].splitlines()[0]
        return f"out of memory ({allocation})"
    if "has overflowed its stack" in last_words:
        return "stack overflow (the native stack of a flow thread ran out)"
    if code < 0:
        number = -code
        try:
            known = signal.Signals(number)
        except ValueError:
            return f"killed by signal {number}"
        return _SIGNALS.get(known, f"killed by {known.name}")
    return f"exit code {code}"


def running_state(paths: GridPaths) -> dict[str, Any] | None:
    """The published state of the grid running for ``paths``, or None.

    A file is trusted only while its pid is the very supervisor that wrote it (see
    ``is_supervisor_of``): a stale file whose pid now belongs to another process is ignored."""
    state = paths.read_state()
    if not state or state.get("status") != "ready":
        return None
    return state if is_supervisor_of(paths, state) else None


def workers_elsewhere(state: dict[str, Any], timeout: float = 1.0) -> list[dict[str, Any]]:
    """The workers the grid's Worker API replicas heard from lately that this supervisor did not
    start (``flowmetal worker`` processes, on this machine or others), as process records.

    Each replica knows the workers that call it; they are merged, the latest call winning. A
    replica that does not answer is skipped (its workers are listed by the others they fail over to)."""
    started = {p.get("id") for p in state.get("processes", [])}
    found: dict[str, dict[str, Any]] = {}
    for url in state.get("worker_urls") or []:
        client = WireClient(url, timeout=timeout, patience=0)
        client.auth = auth_headers(Path(state["home"])) if state.get("home") else client.auth
        try:
            answer = client.get("/v1/workers")
        except WireError:
            continue
        finally:
            client.close()
        for known in answer.get("workers", []):
            if known["id"] in started or known["seen"] <= found.get(known["id"], {}).get("seen", 0):
                continue
            found[known["id"]] = {
                "role": "worker", "name": known["id"].rsplit(".", 1)[0], "pid": None, "id": known["id"],
                "started": known.get("since"), "restarts": 0, "remote": True, "address": known.get("address"),
                "seen": known["seen"], "worker_api": url,
            }
    return sorted(found.values(), key=lambda p: str(p["id"]))


def remove_stale_state(paths: GridPaths) -> None:
    """Remove a grid.json no supervisor stands behind (under the lock, so never a live grid's)."""
    if not paths.state.exists():
        return
    paths.home.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        paths.state.unlink(missing_ok=True)
        paths.lock.unlink(missing_ok=True)


def start_background(
    paths: GridPaths, workers: int | None = None, listen: str | None = None, tokens: Path | None = None,
    timeout: float = 30.0, worker_settings: WorkerSettings | None = None, clock: str = "real",
    layout: Layout | None = None, sandbox: str = "auto", http_allow: str = "",
) -> dict[str, Any]:
    """Start a supervisor detached from this process and wait until its grid is ready."""
    argv = [sys.executable, "-m", "grid_local.supervisor", "--home", str(paths.home)]
    if worker_settings is not None:
        argv += worker_settings.argv()
    if layout is not None:
        argv += layout.argv()
    if workers is not None:
        argv += ["--workers", str(workers)]
    if listen:
        host, _, port = listen.rpartition(":")
        argv += ["--host", host or "127.0.0.1", "--port", port]
    if tokens:
        argv += ["--tokens", str(tokens.resolve())]
    if clock != "real":
        argv += ["--clock", clock]
    if sandbox != "auto":
        argv += ["--sandbox", sandbox]
    if http_allow:
        argv += ["--http-allow", http_allow]
    if paths.db_url:
        argv += ["--db", paths.db_url]
    paths.logs.mkdir(parents=True, exist_ok=True)
    log_path = paths.logs / "supervisor.log"
    with open(log_path, "ab") as log:
        offset = os.fstat(log.fileno()).st_size
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = running_state(paths)
        if state and state["pid"] == process.pid:
            return state
        code = process.poll()
        if code is not None:
            # The supervisor's one-line reason ("... failed: <cause>" or "error: <cause>"), shown as it is.
            line = last_line(log_path, offset, "failed: ") or last_line(log_path, offset, "error: ")
            reason = line.split("failed: ", 1)[-1] if "failed: " in line else line.split("error: ", 1)[-1]
            raise RuntimeError(f"the grid could not start: {reason or f'its supervisor exited with {code}'} "
                               f"(logs in {paths.logs})")
        time.sleep(0.05)
    raise RuntimeError(f"the grid did not start within {timeout:g} s (see {paths.logs / 'supervisor.log'})")


def stop_background(paths: GridPaths, timeout: float = 20.0) -> bool:
    """Stop the grid running for ``paths``; returns False when none was running."""
    state = running_state(paths)
    if state is None:
        remove_stale_state(paths)
        return False
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    # Its children die with it (PR_SET_PDEATHSIG); a supervisor in a session of its own leads its group.
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    remove_stale_state(paths)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="flowmetal-supervisor")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    Layout.add_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=Path, default=None)
    parser.add_argument("--clock", choices=["real", "virtual"], default="real")
    parser.add_argument("--db", default=None, help="postgresql://USER@HOST:PORT/DB (default: flow.db in the home)")
    parser.add_argument("--sandbox", choices=SANDBOX_CHOICES, default="auto")
    parser.add_argument("--http-allow", default="")
    WorkerSettings.add_arguments(parser)
    options = parser.parse_args(argv)
    try:
        layout = Layout.from_options(options)
        isolation = Isolation.for_grid(options.host, bool(options.tokens), options.sandbox, options.http_allow)
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    supervisor = Supervisor(GridPaths(options.home, options.db), options.workers, options.host, options.port, options.tokens,
                            WorkerSettings.from_options(options), options.clock, layout, isolation)
    if not supervisor.acquire_lock():
        print(f"error: a grid is already running for {options.home}", file=sys.stderr)
        sys.exit(2)

    def stop(*_: Any) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        supervisor.start()
        supervisor.loop()
    except Exception as exc:
        supervisor.log(f"failed: {exc}")
        supervisor.shutdown()
        sys.exit(1)
    supervisor.shutdown()


if __name__ == "__main__":
    main()
