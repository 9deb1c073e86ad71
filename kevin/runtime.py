"""Bringing a database up for a command: the configured one, or the embedded one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from kevin.config import Settings
from kevin.store import database

log = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def database_url(settings: Settings, *, migrate: bool = True) -> AsyncIterator[str]:
    """Yield a URL for Kevin's database, migrated to head; with no KEVIN_DATABASE_URL an
    embedded PostgreSQL in KEVIN_DATA_DIR is started, and stopped again on exit."""
    embedded: database.EmbeddedPostgres | None = None
    try:
        if settings.database_url:
            url = settings.database_url
        else:
            embedded = database.EmbeddedPostgres(settings.data_dir)
            log.info("starting embedded PostgreSQL", pgdata=str(embedded.pgdata))
            server_url = await asyncio.to_thread(embedded.start)
            url = await embedded.ensure_database(server_url)
        if migrate:
            await database.migrate(url)
        yield url
    finally:
        if embedded is not None:
            log.info("stopping embedded PostgreSQL")
            await asyncio.to_thread(embedded.stop)
