"""``kevin serve --workers N``: one listening socket, N worker processes sharing it.

One Python process runs one event loop on one core. Each of a submission's round trips
to PostgreSQL waits its turn in that loop's queue, so with one process latency, not CPU,
bounds the throughput while the machine still has cores to spare (docs/performance.md,
change 13). Workers divide that queue.

The supervisor (this module, in the process the user started) prepares what must happen
once — the embedded PostgreSQL if there is no KEVIN_DATABASE_URL, the migrations, the
bound sockets, so that a port already in use fails at once with one line — then starts
the workers: ``python -m kevin.cli serve --listen-fd FD --workers N``, each inheriting its own
socket on the shared port (see listening_sockets). Everything shared between workers
already lives in PostgreSQL: match-key locks, the feed's sequencer (one leader per
database), the trades themselves.

SIGTERM or SIGINT to the supervisor reaches every worker, which shuts down as a single
``kevin serve`` does; the supervisor exits 0 once all have. A worker that exits on its own
stops the others and the supervisor exits 1: a supervisor of processes (systemd,
Kubernetes) restarts the whole service instead of it running short-handed unnoticed.
Metrics of all workers are summed through prometheus_client's multiprocess mode
(kevin.api.metrics), in a directory that lives as long as the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile

import structlog

from kevin.config import Settings
from kevin.lifecycle import Health, cancel_and_wait, stop_signals
from kevin.runtime import Database, open_database

log = structlog.get_logger("kevin")

# A worker gets HANDLER_GRACE twice plus the pool's close (kevin.cli); the supervisor
# waits that long and a little more before it kills, inside the 10 s a SIGTERM allows.
WORKER_STOP_TIMEOUT = 8.5
# How often a worker checks that its supervisor is still there (see watch_supervisor).
SUPERVISOR_POLL = 1.0


class WorkersFailed(Exception):
    """The service could not be kept running; the message is the user's one line."""


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """One listening socket per worker, all on host:port with SO_REUSEPORT: the kernel
    spreads connections over them by address hash. One shared socket would not: whichever
    worker wakes first accepts, and a burst of 9 keep-alive connections went 9-0 to one
    worker in 3 tries of 8, leaving the other idle for the connections' whole life.

    SO_REUSEPORT would also let a second service of the same user on the same port take
    half the connections unnoticed, so a plain bind first proves the port free. Linux
    spreads connections over the sockets; BSD and macOS hand them all to one, so there
    workers add processes but not capacity."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise WorkersFailed("--workers needs SO_REUSEPORT (Linux); run one process here")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        socket.create_server((host, port), family=family).close()
        for _ in range(count):
            sock = socket.create_server((host, port), family=family, backlog=1024,
                                        reuse_port=True)
            sockets.append(sock)
            sock.set_inheritable(True)
    except OSError as e:
        for sock in sockets:
            sock.close()
        # create_server adds the address to strerror; say it once, as kevin.cli does.
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise WorkersFailed(f"cannot listen on {host}:{port}: {reason}") from e
    return sockets


async def supervise(settings: Settings, host: str, port: int, workers: int) -> None:
    """Run ``workers`` worker processes until a stop signal (exit 0) or until one of them
    exits on its own (WorkersFailed)."""
    async with open_database(settings) as db:
        url = db.url
        sockets = listening_sockets(host, port, workers)
        with contextlib.ExitStack() as open_sockets, \
                tempfile.TemporaryDirectory(prefix="kevin-metrics-") as metrics_dir:
            for sock in sockets:
                open_sockets.enter_context(sock)
            env = {**os.environ, "KEVIN_DATABASE_URL": url,
                   "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
                   "KEVIN_SUPERVISOR_PID": str(os.getpid())}
            children = [await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kevin.cli", "serve", "--listen-fd", str(sock.fileno()),
                "--workers", str(workers),
                env=env, pass_fds=(sock.fileno(),)) for sock in sockets]
            log.info("serving", url=f"http://{host}:{port}", workers=[c.pid for c in children],
                     database="configured" if settings.database_url else "embedded")
            failure = await _until_stop_or_failure(children, db)
            log.info("shutting down")
            await _stop(children)
            if failure is not None:
                raise WorkersFailed(failure)


async def _until_stop_or_failure(
    children: list[asyncio.subprocess.Process], db: Database,
) -> str | None:
    """None on SIGTERM/SIGINT; else why the service cannot go on: a worker exited, or
    the embedded PostgreSQL stopped and could not be restarted."""
    with stop_signals() as stop:
        waits = {asyncio.create_task(c.wait()): c for c in children}
        stopped = asyncio.create_task(stop.wait())
        # The workers' /healthz cannot see the supervisor's watchdog; once it gives up,
        # the supervisor stops them and exits non-zero, which is what a supervisor of
        # processes watches.
        keeper = asyncio.create_task(db.keep_embedded_running(Health()))
        try:
            done, _ = await asyncio.wait([stopped, keeper, *waits],
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([stopped, *waits])
            if not keeper.done():
                await cancel_and_wait([keeper])
    if stopped in done:
        return None
    if keeper in done:
        return str(keeper.exception())
    exited = next(child for task, child in waits.items() if task in done)
    log.error("a worker exited; stopping the others", pid=exited.pid,
              status=exited.returncode)
    return f"worker {exited.pid} exited with status {exited.returncode}; stopped the others"


async def _stop(children: list[asyncio.subprocess.Process]) -> None:
    for child in children:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(WORKER_STOP_TIMEOUT):
            await asyncio.gather(*(c.wait() for c in children))
    except TimeoutError:
        for child in children:
            if child.returncode is None:
                log.warning("worker did not stop in time; killing it", pid=child.pid)
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
        await asyncio.gather(*(c.wait() for c in children))


async def watch_supervisor(stop: asyncio.Event) -> None:
    """In a worker: stop when the supervisor is gone (killed with SIGKILL, it could not
    stop us), rather than serve on as an orphan nobody will stop."""
    supervisor = int(os.environ.get("KEVIN_SUPERVISOR_PID", "0"))
    if not supervisor:
        return
    while os.getppid() == supervisor:  # noqa: ASYNC110 - no event tells of a parent's death
        await asyncio.sleep(SUPERVISOR_POLL)
    log.error("the supervisor is gone; stopping", supervisor=supervisor)
    stop.set()
