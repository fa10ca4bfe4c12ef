"""A real Docker Engine for the tests, and the test image built on it from Debian's static busybox.

The engine is the one that answers (``DOCKER_HOST``, else the default socket); when none does and
``dockerd`` is installed, the session starts one and stops it at the end. With neither, the tests
that need Docker skip and say why; ``FLOWMETAL_REQUIRE_DOCKER=1`` (CI) turns that skip into a failure.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from grid_local.connectors.containers import LABEL_GRID, grid_label

TEST_IMAGE = "flowmetal-test/busybox:2"
REQUIRE_ENV = "FLOWMETAL_REQUIRE_DOCKER"
BUSYBOX = Path("/bin/busybox")
DOCKERFILE = b"""FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && mkdir -p /tmp && chmod 1777 /tmp"]
ENV PATH=/bin
CMD ["/bin/sh"]
"""


def unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: Docker tests must run)", pytrace=False)
    pytest.skip(reason)


def _client(timeout: float = 10) -> Any:
    import docker

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except docker.errors.DockerException:
        return None


def _is_static(path: Path) -> bool:
    """An ELF executable without a program interpreter (PT_INTERP) runs FROM scratch."""
    data = path.read_bytes()[:65536]
    return data[:4] == b"\x7fELF" and b"/lib64/ld-linux" not in data and b"/lib/ld-" not in data


def build_test_image(client: Any) -> str:
    """``TEST_IMAGE`` from the host's static busybox (about a second, no registry)."""
    if not BUSYBOX.is_file() or not _is_static(BUSYBOX):
        unavailable(f"the test image needs a static {BUSYBOX} (apt-get install busybox-static)")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        tar.add(str(BUSYBOX), arcname="busybox")
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(DOCKERFILE)
        tar.addfile(info, io.BytesIO(DOCKERFILE))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=TEST_IMAGE, rm=True, forcerm=True)
    return TEST_IMAGE


@dataclass
class Engine:
    client: Any
    image: str

    def containers_of(self, home: Path) -> list[Any]:
        """Every container (running or not) the grid at ``home`` labelled."""
        return list(self.client.containers.list(
            all=True, filters={"label": f"{LABEL_GRID}={grid_label(home)}"}, ignore_removed=True))

    def remove_all_of(self, home: Path) -> None:
        """Remove them (the grid's own sweep may be removing some at the same time)."""
        import docker

        deadline = time.monotonic() + 30
        while (left := self.containers_of(home)) and time.monotonic() < deadline:
            for container in left:
                try:
                    container.remove(force=True, v=True)
                except docker.errors.APIError:  # gone already, or its removal is in progress
                    pass
            time.sleep(0.1)


def _start_dockerd(log_dir: Path) -> subprocess.Popen[bytes] | None:
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0 or os.environ.get("DOCKER_HOST"):
        return None
    log = open(log_dir / "dockerd.log", "ab")
    return subprocess.Popen([dockerd, "--ip-forward=false"], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    client = _client()
    started = None
    if client is None:
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        started = _start_dockerd(tmp_path_factory.mktemp("dockerd"))
        if started is None:
            unavailable(f"no Docker Engine answers at {where} and none can be started here "
                        "(apt-get install docker.io, then dockerd --ip-forward=false)")
        deadline = time.monotonic() + 30
        while client is None and time.monotonic() < deadline and started.poll() is None:
            time.sleep(0.2)
            client = _client()
        if client is None:
            started.kill()
            started.wait()
            unavailable(f"dockerd did not answer at {where} within 30 s")
    try:
        yield Engine(client, build_test_image(client))
    finally:
        client.close()
        if started is not None:
            started.send_signal(signal.SIGTERM)
            try:
                started.wait(20)
            except subprocess.TimeoutExpired:
                started.kill()
                started.wait()
