"""Docker containers as flow resources: opened, served and removed through the Docker Engine API.

The resources connector performs these. A container is named and labelled after the grid, the
flow and the resource, so it is found again by name (a flow resumed on another worker goes on in
the same container; one that vanished is created again from the spec its handle carries) and
removed by label: the resources connector's sweep removes every container of this grid whose
flow has ended, at start and as soon as a flow ends, so closing needs nothing a crash could lose.
The engine is the one ``DOCKER_HOST`` names (the Docker SDK's rules), else the default socket.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grid_local.runtime import journal as jr

LABEL_GRID = "io.flowmetal.grid"
LABEL_FLOW = "io.flowmetal.flow"
LABEL_RESOURCE = "io.flowmetal.resource"
DEFAULT_ENGINE = "unix:///var/run/docker.sock"
MAX_OUTPUT = 1024 * 1024
LOG_FLUSH_SECONDS = 0.1
STOP_SECONDS = 2
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Exit codes runc gives an exec whose command could not be started at all.
_NOT_STARTED = re.compile(r"^OCI runtime exec failed: .*?exec: \"(?P<cmd>[^\"]*)\": (?P<why>[^:]+)")

LogLines = Callable[[str, str, list[str]], None]
"""``(flow_id, "_stdout" or "_stderr", lines)``: where streamed output goes."""


class EngineUnavailable(Exception):
    """No Docker Engine answered; the message is the one line a flow fails with."""


def engine_url() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE


def grid_label(home: Path) -> str:
    """This grid's label value: stable for a FLOWMETAL_HOME, so a restarted grid reaps what it left."""
    return hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]


def _reason(exc: BaseException) -> str:
    """The root cause of a connection failure, in a few words."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, FileNotFoundError):
            return "no such socket"
        if isinstance(seen, PermissionError):
            return "permission denied"
        if isinstance(seen, TimeoutError):
            return "timed out"
        for arg in getattr(seen, "args", ()):
            if isinstance(arg, BaseException):
                nested = _reason(arg)
                if nested:
                    return nested
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    for needle, reason in (("Connection refused", "connection refused"), ("No such file", "no such socket"),
                           ("Permission denied", "permission denied")):
        if needle in text:
            return reason
    return ""


def _unavailable(exc: BaseException) -> EngineUnavailable:
    reason = _reason(exc) or str(exc).splitlines()[0]
    return EngineUnavailable(f"docker.container needs a Docker Engine at {engine_url()}: {reason}")


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        found.append(current)
        queue += children.get(current, [])
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all it started (twice: one may fork while the first pass runs)."""
    for _ in range(2):
        for each in _descendants(pid):
            try:
                os.kill(each, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Containers:
    """The Docker half of the resources connector (thread-safe: requests run in a thread pool)."""

    def __init__(self, home: Path, workspaces: Path) -> None:
        self.grid = grid_label(home)
        self.workspaces = workspaces.resolve()
        # Written before this grid's first container: until then there is nothing to sweep, and a
        # grid that never runs one never loads the Docker SDK (about a second of CPU) nor asks an engine.
        self.used = home / "docker-used"
        self._client: Any = None
        self._lock = threading.Lock()

    # -- the engine ---------------------------------------------------------------------------

    def api(self) -> Any:
        """The Docker SDK's low-level client, connected on first use (and again after a failure)."""
        with self._lock:
            if self._client is None:
                import docker  # imported here: a grid that never opens a container never pays for it
                try:
                    self._client = docker.from_env(timeout=60, max_pool_size=64).api
                except docker.errors.DockerException as exc:
                    raise _unavailable(exc) from None
            return self._client

    def _call(self, perform: Callable[[Any], Any]) -> Any:
        """Run one Engine API exchange; a lost engine becomes EngineUnavailable (and a fresh client next time)."""
        import requests

        api = self.api()
        try:
            return perform(api)
        except requests.exceptions.ConnectionError as exc:
            with self._lock:
                self._client = None
            raise _unavailable(exc) from None

    def container_name(self, flow_id: str, name: str) -> str:
        return f"flowmetal-{self.grid}-{flow_id}-{name}"

    # -- open ---------------------------------------------------------------------------------

    def open(self, flow_id: str, args: dict[str, Any]) -> dict[str, Any]:
        name, spec = str(args.get("name", "")), args.get("spec") or {}
        if not _NAME.match(name) or not _NAME.match(flow_id):
            return jr.err(f"resource '{name}': invalid name")
        try:
            container_id = self._create(flow_id, name, spec)
        except (EngineUnavailable, SpecError) as exc:
            return jr.err(str(exc))
        except Exception as exc:  # a spec the SDK refuses (memory = "lots"): an answer, never a lost request
            return jr.err(f"docker.container: {_explain(exc)}")
        return jr.ok({
            "kind": "docker", "name": name, "flow_id": flow_id, "container": self.container_name(flow_id, name),
            "id": container_id[:12], "image": spec.get("image"), "spec": spec,
        })

    def _create(self, flow_id: str, name: str, spec: dict[str, Any]) -> str:
        """Create and start the container for (flow, resource); an existing one of the same flow is kept."""
        import docker

        cname = self.container_name(flow_id, name)
        image = spec.get("image")
        if not isinstance(image, str) or not image:
            raise SpecError("docker.container: no image given")
        self.used.touch()

        def create(api: Any) -> str:
            host_config = api.create_host_config(
                init=True, network_mode=str(spec.get("network") or "none"), mounts=self._mounts(flow_id, spec),
                nano_cpus=int(float(spec["cpus"]) * 1e9) if spec.get("cpus") else None,
                mem_limit=spec.get("memory") or None, pids_limit=spec.get("pids") or None,
            )
            created = api.create_container(
                image, entrypoint=["sleep"], command=["infinity"], name=cname, host_config=host_config,
                environment=dict(spec.get("env") or {}), working_dir=spec.get("workdir") or None,
                user=spec.get("user") or None,
                labels={LABEL_GRID: self.grid, LABEL_FLOW: flow_id, LABEL_RESOURCE: name},
            )
            return str(created["Id"])

        try:
            try:
                container_id = self._call(create)
            except docker.errors.ImageNotFound:
                self._pull(image)
                container_id = self._call(create)
        except docker.errors.ImageNotFound:
            raise SpecError(f"docker.container: image {image} is not on the engine") from None
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise SpecError(f"docker.container: {_explain(exc)}") from None
            found = self._call(lambda api: api.inspect_container(cname))  # a retried open: keep it
            if found["Config"]["Labels"].get(LABEL_FLOW) != flow_id:
                raise SpecError(f"docker.container: a container named {cname} exists and is not this flow's")
            container_id = str(found["Id"])
        try:
            self._call(lambda api: api.start(container_id))
        except docker.errors.APIError as exc:
            self.close(container_id)
            raise SpecError(f"docker.container: cannot start {image}: {_explain(exc)}") from None
        return container_id

    def _pull(self, image: str) -> None:
        import docker

        try:
            self._call(lambda api: api.pull(image))
        except docker.errors.APIError as exc:
            raise SpecError(f"docker.container: image {image} is not on the engine and could not be pulled: "
                            f"{_explain(exc)}") from None

    def _mounts(self, flow_id: str, spec: dict[str, Any]) -> list[Any]:
        """Bind mounts of workspaces; a source must be a workspace folder of this grid, nothing else."""
        from docker.types import Mount

        mounts = []
        for mount in spec.get("mounts") or []:
            source = mount.get("workspace") if isinstance(mount, dict) else None
            if isinstance(source, str):
                owner, workspace = flow_id, source
            elif isinstance(source, dict):
                owner, workspace = str(source.get("flow_id", "")), str(source.get("name", ""))
            else:
                raise SpecError(f"docker.mount: not a workspace: {source!r}")
            if not _NAME.match(owner) or not _NAME.match(workspace):
                raise SpecError(f"docker.mount: invalid workspace {workspace!r}")
            folder = self.workspaces / owner / workspace
            if isinstance(source, str):
                folder.mkdir(parents=True, exist_ok=True)  # a workspace of this very flow: open it here
            path = (folder / str(mount.get("subpath") or "")).resolve()
            if path != folder and folder not in path.parents:
                raise SpecError(f"docker.mount: subpath {mount.get('subpath')!r} leaves the workspace")
            if not path.is_dir():
                raise SpecError(f"docker.mount: workspace {workspace}/{mount.get('subpath') or ''} is not open "
                                "(it may have been closed)")
            target = str(mount.get("target", ""))
            if not target.startswith("/"):
                raise SpecError(f"docker.mount: target must be an absolute path, got {target!r}")
            mounts.append(Mount(target, str(path), type="bind", read_only=bool(mount.get("read_only"))))
        return mounts

    # -- exec ---------------------------------------------------------------------------------

    def exec(self, flow_id: str, args: dict[str, Any], log: LogLines) -> dict[str, Any]:
        resource = args.get("resource") or {}
        argv = [str(a) for a in args.get("argv") or []]
        if not argv:
            return jr.err("docker.exec: no command given")
        timeout = float(args.get("timeout") or 60)
        try:
            cname, reopened = self._find(resource)
            return self._run(flow_id, cname, argv, args, timeout, reopened, log)
        except (EngineUnavailable, SpecError) as exc:
            return jr.err(str(exc))
        except Exception as exc:  # whatever the engine or the SDK raised: an answer, never a lost request
            return jr.err(f"docker.exec: {_explain(exc)}")

    def _find(self, resource: dict[str, Any]) -> tuple[str, str | None]:
        """The resource's container, running; re-created or restarted if it is not (and how, to say so)."""
        import docker

        owner, name = str(resource.get("flow_id", "")), str(resource.get("name", ""))
        if not _NAME.match(owner) or not _NAME.match(name):
            raise SpecError("docker.exec: not an opened docker.container resource")
        cname = self.container_name(owner, name)
        try:
            found = self._call(lambda api: api.inspect_container(cname))
        except docker.errors.NotFound:
            self._create(owner, name, dict(resource.get("spec") or {}))
            return cname, "its container was gone; reopened from the journaled spec"
        if not found["State"]["Running"]:
            self._call(lambda api: api.start(cname))
            return cname, "its container had stopped; started again"
        return cname, None

    def _run(self, flow_id: str, cname: str, argv: list[str], args: dict[str, Any], timeout: float,
             reopened: str | None, log: LogLines) -> dict[str, Any]:
        import docker

        env = {str(k): str(v) for k, v in (args.get("env") or {}).items()}
        try:
            exec_id = self._call(lambda api: api.exec_create(
                cname, argv, environment=env or None, workdir=args.get("workdir") or None)["Id"])
            chunks = self._call(lambda api: api.exec_start(exec_id, stream=True, demux=True))
        except docker.errors.APIError as exc:
            raise SpecError(f"docker.exec: {_explain(exc)}") from None
        timed_out, finished = threading.Event(), threading.Event()

        def expire() -> None:
            timed_out.set()
            while not finished.is_set() and not self.kill_exec(exec_id):
                finished.wait(0.05)  # not started yet, or already ending: look again

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        output = {"_stdout": Output(), "_stderr": Output()}
        streamer = LineStreamer(flow_id, log) if args.get("stream") else None
        try:
            for out, err in chunks:
                for stream, data in (("_stdout", out), ("_stderr", err)):
                    if data:
                        output[stream].add(data)
                        if streamer:
                            streamer.add(stream, data)
        except Exception as exc:  # the engine went away mid-stream
            timer.cancel()
            self.kill_exec(exec_id)
            raise _unavailable(exc) from None
        finally:
            finished.set()
            timer.cancel()
            if streamer:
                streamer.close()
        stdout, stderr = output["_stdout"].text(), output["_stderr"].text()
        if timed_out.is_set():
            return jr.err(f"docker.exec: {argv[0]} timed out after {timeout:g} s (its processes were killed)")
        code = self._call(lambda api: api.exec_inspect(exec_id)).get("ExitCode")
        not_started = _NOT_STARTED.match(stdout) if code in (126, 127) else None
        if not_started:
            why = not_started["why"].strip()
            if "not found" in why or "no such file" in why:
                return jr.err(f"docker.exec: command not found: {not_started['cmd']}")
            return jr.err(f"docker.exec: cannot run {not_started['cmd']}: {why}")
        value: dict[str, Any] = {"exit_code": int(code if code is not None else -1), "stdout": stdout, "stderr": stderr}
        if reopened:
            value["reopened"] = reopened
        return jr.ok(value)

    def kill_exec(self, exec_id: str) -> bool:
        """Kill the processes of a running exec.

        The Engine API has no call for it, so this kills them by host pid, which only a local engine
        gives: the pid must be in this machine's /proc and in the container's cgroup.
        """
        try:
            info = self._call(lambda api: api.exec_inspect(exec_id))
        except Exception:
            return False
        pid, container = int(info.get("Pid") or 0), str(info.get("ContainerID") or "")
        if not info.get("Running") or not pid or not container or not engine_url().startswith("unix://"):
            return False
        try:
            if container not in Path(f"/proc/{pid}/cgroup").read_text():
                return False
        except OSError:
            return False
        kill_tree(pid)
        return True

    # -- close --------------------------------------------------------------------------------

    def labelled(self) -> list[dict[str, Any]]:
        """Every container of this grid, running or not."""
        if not self.used.exists():
            return []
        return list(self._call(lambda api: api.containers(all=True, filters={"label": f"{LABEL_GRID}={self.grid}"})))

    def by_flow(self) -> dict[str, list[str]]:
        """This grid's containers (their ids) by the flow they belong to."""
        found: dict[str, list[str]] = {}
        for container in self.labelled():
            found.setdefault(container["Labels"].get(LABEL_FLOW, ""), []).append(container["Id"])
        found.pop("", None)
        return found

    def kill_orphan_execs(self) -> int:
        """At start: kill what execs a previous incarnation of this connector left running (it was interrupted)."""
        killed = 0
        for container in self.labelled():
            try:
                execs = self._call(lambda api: api.inspect_container(container["Id"])).get("ExecIDs") or []
            except Exception:
                continue
            killed += sum(1 for exec_id in execs if self.kill_exec(exec_id))
        return killed

    def close(self, container_id: str) -> None:
        """Stop and remove a container (gone already is fine)."""
        import docker

        try:
            self._call(lambda api: api.stop(container_id, timeout=STOP_SECONDS))
        except docker.errors.APIError:
            pass
        try:
            self._call(lambda api: api.remove_container(container_id, v=True, force=True))
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: its removal is already in progress
                raise


class SpecError(Exception):
    """A container or exec the engine refused, or a spec that cannot be opened; one line for the flow."""


def _explain(exc: Any) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).strip().splitlines()[0]


class Output:
    """The tail of one output stream, at most MAX_OUTPUT bytes."""

    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * MAX_OUTPUT:
            del self.data[:-MAX_OUTPUT]

    def text(self) -> str:
        return bytes(self.data[-MAX_OUTPUT:]).decode("utf-8", "replace")


class LineStreamer:
    """Complete lines of an exec's output, sent to the flow's log as they come (batched over 0.1 s)."""

    def __init__(self, flow_id: str, log: LogLines) -> None:
        self.flow_id = flow_id
        self.log = log
        self.partial = {"_stdout": b"", "_stderr": b""}
        self.pending: dict[str, list[str]] = {"_stdout": [], "_stderr": []}
        self.lock = threading.Lock()
        self.sending = threading.Lock()  # batches leave in the order they were taken
        self.timer: threading.Timer | None = None

    def add(self, stream: str, data: bytes) -> None:
        *lines, self.partial[stream] = (self.partial[stream] + data).split(b"\n")
        if not lines:
            return
        with self.lock:
            self.pending[stream] += [line.decode("utf-8", "replace").rstrip("\r") for line in lines]
            if self.timer is None:
                self.timer = threading.Timer(LOG_FLUSH_SECONDS, self.flush)
                self.timer.daemon = True
                self.timer.start()

    def flush(self) -> None:
        with self.sending:
            with self.lock:
                batches, self.pending = self.pending, {"_stdout": [], "_stderr": []}
                self.timer = None
            for stream, lines in batches.items():
                if lines:
                    try:
                        self.log(self.flow_id, stream, lines)
                    except Exception:  # the log is a courtesy; the result carries the output anyway
                        pass

    def close(self) -> None:
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
            for stream, rest in self.partial.items():
                if rest:
                    self.pending[stream].append(rest.decode("utf-8", "replace"))
        self.flush()
