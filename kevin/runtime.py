"""Bringing a database up for a command: the configured one, or the embedded one."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from kevin.config import Settings
from kevin.lifecycle import Health
from kevin.store import database
from kevin.store.embedded import EmbeddedPostgres, EmbeddedPostgresFailed

log = structlog.get_logger(__name__)

# How often serve looks whether the embedded PostgreSQL still runs. Its postmaster is not
# our child (pg_ctl detaches it), so no wait() tells of its end.
POSTMASTER_POLL = 0.5
# A server that keeps dying is not restarted forever: past this many restarts within the
# window, serve gives up and exits non-zero, for its own supervisor to act.
MAX_RESTARTS = 5
RESTART_WINDOW = 600.0


class EmbeddedPostgresLost(Exception):
    """The embedded PostgreSQL stopped under serve and could not be brought back; the
    message is the user's one line."""


@dataclass
class Database:
    """The database a command runs on; ``embedded`` when Kevin runs the server itself."""

    url: str
    embedded: EmbeddedPostgres | None = None
    server_url: str | None = None

    async def keep_embedded_running(self, health: Health) -> None:
        """serve's watchdog: start the embedded PostgreSQL again whenever it stops (killed,
        crashed, stopped by hand), so that serve never sits at 503 for good. Never
        returns; raises EmbeddedPostgresLost, with ``health`` failed, once it cannot.
        On a configured database there is nothing to keep: it waits to be cancelled."""
        embedded = self.embedded
        if embedded is None:
            await asyncio.Event().wait()
            return
        restarts: list[float] = []
        while True:
            while embedded.is_running():  # noqa: ASYNC110 - no event tells of its end
                await asyncio.sleep(POSTMASTER_POLL)
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < RESTART_WINDOW] + [now]
            if len(restarts) > MAX_RESTARTS:
                self._lost(health, f"it stopped {len(restarts)} times in "
                                   f"{RESTART_WINDOW / 60:.0f} minutes")
            log.error("the embedded PostgreSQL stopped; starting it again",
                      pgdata=str(embedded.pgdata), pid=embedded.pid)
            give_up = threading.Event()
            restart = asyncio.ensure_future(
                asyncio.to_thread(embedded.ensure_running, give_up=give_up))
            try:
                server_url = await asyncio.shield(restart)
            except EmbeddedPostgresFailed as e:
                self._lost(health, e.reason)
            except asyncio.CancelledError:
                # A thread cannot be cancelled: a shutdown lets the attempt under way end
                # (no further one) rather than stop the server while it starts.
                give_up.set()
                with contextlib.suppress(Exception):
                    await restart
                raise
            if server_url != self.server_url:
                self._lost(health, f"it came back at {server_url}, not {self.server_url}")
            log.info("the embedded PostgreSQL is running again", pid=embedded.pid)

    def _lost(self, health: Health, reason: str) -> None:
        assert self.embedded is not None
        message = (f"the embedded PostgreSQL in {self.embedded.pgdata} stopped and was "
                   f"not restarted: {reason}")
        log.error("giving up on the embedded PostgreSQL", reason=reason)
        health.fail(message)
        raise EmbeddedPostgresLost(message)


@contextlib.asynccontextmanager
async def open_database(settings: Settings, *, migrate: bool = True) -> AsyncIterator[Database]:
    """Kevin's database, migrated to head unless ``migrate`` is false. With no
    KEVIN_DATABASE_URL, the embedded PostgreSQL in KEVIN_DATA_DIR: started, or used as it
    runs for another Kevin process; on exit stopped only if no other Kevin process uses
    it (kevin.store.embedded)."""
    if settings.database_url:
        if migrate:
            await database.migrate(settings.database_url)
        yield Database(settings.database_url)
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    log.info("starting embedded PostgreSQL", pgdata=str(embedded.pgdata))
    server_url = await asyncio.to_thread(embedded.start)
    try:
        url = await embedded.ensure_database(server_url)
        if migrate:
            await database.migrate(url)
        yield Database(url, embedded, server_url)
    finally:
        await asyncio.to_thread(embedded.stop)


@contextlib.asynccontextmanager
async def database_url(settings: Settings, *, migrate: bool = True) -> AsyncIterator[str]:
    """open_database's URL, for commands that need nothing else."""
    async with open_database(settings, migrate=migrate) as db:
        yield db.url
