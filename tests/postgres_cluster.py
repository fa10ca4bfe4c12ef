"""A private PostgreSQL cluster for the tests, started from the server binaries in a temporary folder.

One cluster per test session (``postgres_cluster``), a fresh database per test (``postgres_url``:
``CREATE DATABASE ... TEMPLATE`` of an empty one), stopped at the end of the session whatever
happened. The server refuses to run as root: as root, ``initdb`` and ``pg_ctl`` run as the
``postgres`` user. Without server binaries the tests that need PostgreSQL skip and say why;
``FLOWMETAL_REQUIRE_POSTGRES=1`` (CI) turns that skip into a failure.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_ENV = "FLOWMETAL_REQUIRE_POSTGRES"
BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
SUPERUSER = "postgres"


def unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


def server_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        folder = Path(found).resolve().parent  # (a link on PATH: its folder holds psql too)
        if (folder / "psql").is_file():
            return folder
    for folder in BIN_DIRS:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    bin: Path
    root: Path
    port: int
    as_user: list[str]  # ["runuser", "-u", "postgres", "--"] as root, else nothing

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockets(self) -> Path:
        return self.root / "sockets"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.as_user, *argv], capture_output=True, text=True, timeout=timeout, check=False,
                              cwd=self.root)

    def pg_ctl(self, action: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c max_connections=300 -c fsync=off"
        argv = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60"]
        if action == "start":
            argv += ["-o", options]
        if action == "stop":
            argv += ["-m", "fast"]
        return self.run(*argv, action, timeout=timeout)

    def start(self) -> None:
        done = self.pg_ctl("start")
        if done.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:] if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {done.stderr or done.stdout}\n{log}")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.pg_ctl("stop")

    def sql(self, statement: str, database: str = "postgres") -> str:
        done = self.run(str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d",
                        database, "-v", "ON_ERROR_STOP=1", "-At", "-c", statement)
        if done.returncode != 0:
            raise RuntimeError(f"psql {statement!r}: {done.stderr.strip()}")
        return done.stdout.strip()

    def fresh_database(self) -> str:
        """The URL of a new, empty database (a copy of ``flowmetal_template``)."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE flowmetal_template")
        return self.url(name)


def start_cluster() -> Cluster:
    folder = server_bin()
    if folder is None:
        unavailable("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    assert folder is not None
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses root
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            unavailable(f"running as root, and there is no {SUPERUSER} user to run the PostgreSQL server as")
        as_user = ["runuser", "-u", SUPERUSER, "--"]
    root = Path(tempfile.mkdtemp(prefix="flowmetal-pg-"))
    if as_user:
        os.chmod(root, 0o755)
        shutil.chown(root, SUPERUSER, SUPERUSER)
    cluster = Cluster(folder, root, _free_port(), as_user)
    cluster.run("mkdir", "-p", str(cluster.sockets))
    done = cluster.run(str(folder / "initdb"), "-D", str(cluster.data), "-U", SUPERUSER, "--auth-local=trust",
                       "--auth-host=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {done.stderr or done.stdout}")
    try:
        cluster.start()
        cluster.sql("CREATE DATABASE flowmetal_template")
    except BaseException:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_cluster: Cluster) -> str:
    """A fresh, empty database of the session's cluster (the Flow DB schema is made when it is opened)."""
    return postgres_cluster.fresh_database()
