"""A real PostgreSQL server for the tests, from Debian's ``postgresql`` package.

One server per test session, started the first time a test asks for it: ``initdb`` into a fresh
temporary folder, a Unix socket in that folder and no TCP listener, durability switched off (a
test cluster that dies is thrown away anyway). Each test gets its own database cloned from the
template ``base``, so tests never see each other's rows. ``initdb`` and ``pg_ctl`` refuse to run as
root, so when the suite runs as root the server runs as the ``postgres`` user the package creates,
and the folder belongs to that user. The server is stopped and its folder removed at the end of
the session, whatever the tests did.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

LIB = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"  # the database role the tests connect as
SERVER_USER = "postgres"  # the OS user that runs the server when the suite runs as root
TEMPLATE = "base"
START_TIMEOUT = 60  # seconds; a loaded 2-core machine starts it in well under one
# Durability off and TCP off: the cluster lives for one test session only.
SETTINGS = {
    "listen_addresses": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}
NOT_INSTALLED = (
    "PostgreSQL is not installed (no {lib}/<version>/bin/initdb): run tests/setup.sh, which "
    "installs Debian's postgresql package."
)


class PostgresError(RuntimeError):
    """The test server could not be set up, started or asked something."""


def find_bindir(lib: Path = LIB) -> Path:
    """Return the newest installed server's bin folder (the binaries on PATH may be wrappers)."""
    found = [p.parent for p in lib.glob("*/bin/initdb") if (p.parent / "pg_ctl").exists()]
    if not found:
        raise PostgresError(NOT_INSTALLED.format(lib=lib))

    def version(bindir: Path) -> tuple[int, ...]:
        name = bindir.parent.name
        return tuple(int(x) for x in name.split(".")) if name.replace(".", "").isdigit() else (0,)

    return max(found, key=version)


class PostgresServer:
    """One throwaway cluster: its folder, its socket and the commands that drive it."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root  # holds data/, the socket and the log; owned by the server's user
        self.data = root / "data"
        self.log = root / "server.log"
        self.socket_dir = root
        self.timings: dict[str, float] = {}  # seconds per step, for the README's figures
        self._names = itertools.count(1)
        # initdb and pg_ctl exit at once as root ("cannot be run as root").
        self._as_server = ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []

    # --- lifecycle -------------------------------------------------------------------------

    def init(self) -> None:
        """Create the cluster with a trusted superuser and the test settings."""
        with self._timed("initdb"):
            self._server(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",  # only reachable through the socket in our own folder
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            )
        conf = self.data / "postgresql.conf"
        lines = [f"{k} = {v}" for k, v in SETTINGS.items()]
        lines.append(f"unix_socket_directories = '{self.socket_dir}'")
        with conf.open("a") as f:
            f.write("\n# tests/postgres.py\n" + "\n".join(lines) + "\n")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        with self._timed("start"):
            self._server(
                "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w",
                "-t", str(START_TIMEOUT),
            )  # fmt: skip

    def stop(self) -> None:
        """Stop the server (fast: roll back open sessions), harder if it does not go."""
        if not (self.data / "postmaster.pid").exists():
            return
        try:
            with self._timed("stop"):
                self._server("pg_ctl", "stop", "-D", str(self.data), "-m", "fast")
        except PostgresError:
            self._server("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate")

    def pid(self) -> int | None:
        """Return the postmaster's process id while it runs."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None

    # --- databases -------------------------------------------------------------------------

    def url(self, database: str) -> str:
        """Return a SQLAlchemy URL for ``database`` over asyncpg and the Unix socket."""
        return f"postgresql+asyncpg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement through psql and return what it printed."""
        return self._run(
            [
                str(self.bindir / "psql"),
                "-X",  # no ~/.psqlrc
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                statement,
            ]
        )

    def create_database(self, template: str = TEMPLATE) -> str:
        """Create a fresh database cloned from ``template`` and return its name."""
        name = f"t{next(self._names)}"
        with self._timed("clone"):
            self.sql(f"CREATE DATABASE {name} TEMPLATE {template}")
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending any session a test left open on it."""
        with self._timed("drop"):
            self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    # --- plumbing --------------------------------------------------------------------------

    def _server(self, tool: str, *args: str) -> str:
        return self._run([*self._as_server, str(self.bindir / tool), *args], tool)

    @contextlib.contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.timings[step] = time.perf_counter() - t0

    def _run(self, cmd: list[str], tool: str = "psql") -> str:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT + 30)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PostgresError(
                f"{tool} failed ({done.returncode}):"
                f" {done.stderr.strip() or done.stdout.strip()}\n{log}"
            )
        return done.stdout


def make_root() -> Path:
    """Return a new empty folder the server's user owns (pytest's own tmp is root-only 0700)."""
    # Short and under the system temp folder: a socket path is limited to 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="mailbridge-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(SERVER_USER)
        except KeyError:
            root.rmdir()
            raise PostgresError(
                f"There is no {SERVER_USER!r} user to run PostgreSQL as (the suite runs as root):"
                " run tests/setup.sh, which installs Debian's postgresql package."
            ) from None
        os.chown(root, user.pw_uid, user.pw_gid)
    return root


@contextlib.contextmanager
def running_server(lib: Path = LIB) -> Iterator[PostgresServer]:
    """Start a throwaway cluster with an empty template ``base``; stop and remove it after."""
    server = PostgresServer(find_bindir(lib), make_root())
    try:
        server.init()
        server.start()
        server.sql(f"CREATE DATABASE {TEMPLATE}")
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session, started only if a test needs it."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running_server())
        except PostgresError as e:
            pytest.fail(str(e), pytrace=False)
        yield server


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh database for one test, as a ``postgresql+asyncpg://`` SQLAlchemy URL."""
    name = postgres.create_database()
    yield postgres.url(name)
    postgres.drop_database(name)
