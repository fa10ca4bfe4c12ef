"""The resources connector: opens, serves and closes flow resources (workspaces and Docker containers).

A workspace is a folder under ``$FLOWMETAL_HOME/workspaces/<flow>/<name>``; a container is one
the Docker Engine runs for the flow (``containers.py``). ``open`` and ``exec`` are journaled
actions leased to this process like HTTP requests (interrupted, never re-run, if it dies holding
one). Closing needs no bookkeeping that a crash could lose: a sweep removes the folder and the
containers of every flow the Flow DB says has ended, so nothing outlives its flow.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from grid_local.api.worker_auth import TOKEN_ENV
from grid_local.connectors.base import api_client, check_in, connector_args, grid_policy, serve_requests
from grid_local.connectors.containers import Containers, EngineUnavailable, grid_label
from grid_local.connectors.exec_marks import MARK_ENV, kill_group, kill_marked, mark
from grid_local.connectors.orphans import Orphans
from grid_local.connectors.sandbox import Sandbox, SandboxUnavailable
from grid_local.home import die_with_parent
from grid_local.runtime import journal as jr
from grid_local.secret_refs import KEY_ENV, mask

MAX_OUTPUT = 1024 * 1024
SWEEP_SECONDS = 0.5
ENGINE_RETRY_SECONDS = 5.0
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
KINDS = ("workspace", "docker")


class Workspaces:
    def __init__(self, root: Path, sandbox: Sandbox | None = None, orphans: Orphans | None = None) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.sandbox = sandbox  # commands run under bubblewrap (a shared grid), else as the grid's user
        self.orphans = orphans  # unsandboxed: this process is the commands' subreaper (orphans.py)

    def open(self, flow_id: str, args: dict[str, Any]) -> dict[str, Any]:
        name = str(args.get("name", ""))
        if not _NAME.match(name) or not _NAME.match(flow_id):
            return jr.err(f"resource '{name}': invalid name")
        path = self.root / flow_id / name
        path.mkdir(parents=True, exist_ok=True)
        return jr.ok({"kind": "workspace", "name": name, "flow_id": flow_id, "path": str(path)})

    def exec(self, args: dict[str, Any], tag: str = "") -> dict[str, Any]:
        """Run a command in the workspace, in its own session; when it ends, everything it started
        (its process group, and every process carrying its mark) is killed too (``exec_marks``)."""
        resource = args.get("resource") or {}
        argv = [str(a) for a in args.get("argv") or []]
        if not argv:
            return jr.err("exec: no command given")
        # The folder is found again from the handle's flow and name, never from a path it carries
        # (the Flow DB has already checked that the handle is one an open of this flow returned).
        owner, name = str(resource.get("flow_id", "")), str(resource.get("name", ""))
        path = self.root / owner / name
        if not _NAME.match(owner) or not _NAME.match(name) or not path.is_dir():
            return jr.err(f"exec: workspace '{resource.get('name')}' is not open (it may have been closed)")
        timeout = float(args.get("timeout") or 60)
        given = {str(k): str(v) for k, v in (args.get("env") or {}).items()}
        if self.sandbox:
            env = self.sandbox.environment(path, given, dict(os.environ))
        else:
            env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, MARK_ENV, TOKEN_ENV)}
            env.update(given)
        if tag:
            env[MARK_ENV] = tag
        command = self.sandbox.command(path, argv) if self.sandbox else argv
        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(command, cwd=path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, preexec_fn=die_with_parent, env=env,
                                    start_new_session=True)

        try:
            process = self.orphans.spawn(start) if self.orphans else start()
        except FileNotFoundError:
            return jr.err(f"exec: command not found: {argv[0]}")
        except OSError as exc:
            return jr.err(f"exec: {argv[0]}: {exc.strerror or exc}")
        # Read both pipes in threads: a background process may hold them open after the command ends.
        output: dict[str, bytes] = {}
        readers = [threading.Thread(target=lambda n=n, f=f: output.__setitem__(n, f.read()), daemon=True)
                   for n, f in (("stdout", process.stdout), ("stderr", process.stderr))]
        for reader in readers:
            reader.start()
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            kill_group(process.pid)  # the command's session, then whatever left it but kept the mark
            if tag:
                kill_marked(tag)
            process.wait()
            if self.orphans:
                self.orphans.ended(process.pid)  # and what it left without its mark or its session
        for reader in readers:
            reader.join(timeout=5)
        if timed_out:
            return jr.err(f"exec: {argv[0]} timed out after {timeout:g} s")
        if self.sandbox and self.sandbox.not_found(process.returncode, output.get("stderr", b"")):
            return jr.err(f"exec: command not found: {argv[0]}")
        return jr.ok({
            "exit_code": process.returncode,
            "stdout": output.get("stdout", b"")[-MAX_OUTPUT:].decode("utf-8", "replace"),
            "stderr": output.get("stderr", b"")[-MAX_OUTPUT:].decode("utf-8", "replace"),
        })

    def present(self) -> set[str]:
        """The flows that have a workspace folder."""
        return {entry.name for entry in self.root.iterdir() if entry.is_dir()}

    def close(self, flow_id: str, grid: str = "") -> None:
        if grid:  # a command still running for the flow, and anything it left behind
            kill_marked(f"{grid}:{flow_id}")
        shutil.rmtree(self.root / flow_id, ignore_errors=True)


def resource_kind(args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    return value.get("kind") if isinstance(value, dict) else None


def main(argv: list[str] | None = None) -> None:
    options = connector_args("resources", argv)
    if not options.home:
        raise SystemExit("the resources connector needs --home")
    home = Path(options.home)
    grid = grid_label(home)

    orphans: Orphans | None = None

    def stop(*_: Any) -> None:  # the grid stops: nothing an exec started outlives it
        kill_marked(grid)
        if orphans:
            orphans.kill_all()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    left = kill_marked(grid)  # a previous incarnation's (it was SIGKILLed, or the whole grid was)
    if left:
        print(f"resources: killed {left} process(es) that execs of a previous incarnation left running", flush=True)
    api = api_client(options.api, options.executor)
    check_in(api, options.executor)
    sandbox = None
    if grid_policy(api, options, options.executor).sandbox:  # the grid's policy, wherever this runs
        sandbox = Sandbox(hide=[home])
        try:
            sandbox.check()
        except SandboxUnavailable as exc:  # never run a shared grid's commands unsandboxed
            raise SystemExit(f"{options.executor}: {exc}") from None
    if sandbox is None:  # a sandboxed command's pid namespace holds whatever it leaves
        orphans = Orphans()
    workspaces = Workspaces(home / "workspaces", sandbox, orphans)
    containers = Containers(home, workspaces.root)

    def log(flow_id: str, stream: str, lines: list[str]) -> None:
        api.post("/v1/connectors/log", {"flow_id": flow_id, "stream": stream, "lines": lines})

    def run(request: dict[str, Any]) -> dict[str, Any]:
        args = request["args"]
        if request["kind"] == "open":
            kind = resource_kind(args, "spec")
            if kind == "docker":
                return containers.open(request["flow_id"], args)
            if kind == "workspace":
                return workspaces.open(request["flow_id"], args)
            return jr.err(f"resource '{args.get('name', '')}': this grid cannot open resources of kind '{kind}' "
                          f"(it supports: {', '.join(KINDS)})")
        if resource_kind(args, "resource") == "docker":
            values = request.get("secrets") or {}  # streamed lines are masked as the result will be

            def masked_log(flow_id: str, stream: str, lines: list[str]) -> None:
                log(flow_id, stream, mask(lines, values) if values else lines)

            return containers.exec(request["flow_id"], args, masked_log)
        return workspaces.exec(args, mark(grid, request["flow_id"], request["seq"]))

    def sweep(engine_retry: float) -> float:
        """Close the resources of every flow that has ended; returns when to ask the engine again.

        The Flow DB is long-polled (for up to SWEEP_SECONDS), so a flow's resources close as soon
        as it ends rather than on the next tick.
        """
        with_workspace = workspaces.present()
        containers_of: dict[str, list[str]] = {}
        if time.monotonic() >= engine_retry:
            try:
                containers_of = containers.by_flow()
            except EngineUnavailable:
                engine_retry = time.monotonic() + ENGINE_RETRY_SECONDS  # no engine: ask again later
        flows = sorted(with_workspace | set(containers_of))
        if not flows:
            time.sleep(SWEEP_SECONDS)
            return engine_retry
        ended = api.post("/v1/connectors/resources/finished", {"flow_ids": flows[:1000], "wait": SWEEP_SECONDS})["finished"]
        for flow_id in ended:
            for container in containers_of.get(flow_id, []):
                containers.close(container)
            if flow_id in with_workspace:
                workspaces.close(flow_id, grid)
        return engine_retry

    def sweeper() -> None:
        engine_retry = 0.0
        while True:
            try:
                engine_retry = sweep(engine_retry)
                if orphans:
                    orphans.sweep()
            except Exception as exc:  # keep sweeping; say why in the connector's log
                print(f"resources: sweep: {exc!r}", flush=True)
                time.sleep(SWEEP_SECONDS)

    try:
        killed = containers.kill_orphan_execs()  # before serving: their requests were declared interrupted
        if killed:
            print(f"resources: killed {killed} exec(s) left running by a previous incarnation", flush=True)
    except EngineUnavailable:
        pass
    threading.Thread(target=sweeper, daemon=True, name="sweeper").start()
    serve_requests(api, ("open", "exec"), options.executor, run, concurrency=32)


if __name__ == "__main__":
    main()
