"""What the operational endpoints need from the database: whether the schema is at head,
the figures ``/metrics`` scrapes, and the first statistics of a young database."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
import structlog

from kevin.domain.errors import DatabaseUnavailable
from kevin.store import analyze, database
from kevin.store.stats import ScrapeStats, scrape_stats

log = structlog.get_logger(__name__)

# A scrape answers within this even when the database hangs; its database figures are
# then marked unknown.
SCRAPE_TIMEOUT = 2.0
_UNREADABLE: tuple[type[BaseException], ...] = (
    DatabaseUnavailable, TimeoutError, *database.CONNECTIVITY_ERRORS)


@dataclass(frozen=True)
class SchemaState:
    revision: str | None  # None: the database has no schema yet
    head: str

    @property
    def at_head(self) -> bool:
        return self.revision == self.head


async def schema_state(pool: asyncpg.Pool) -> SchemaState:
    """The database's schema revision and the one this code expects. Raises
    DatabaseUnavailable when the database cannot be reached."""
    head = database.head_revision()
    async with database.connection(pool) as conn:
        return SchemaState(await database.schema_revision(conn), head)


async def scrape(pool: asyncpg.Pool, timeout: float = SCRAPE_TIMEOUT) -> ScrapeStats | None:
    """The database's figures for /metrics, or None when it could not be read in time."""
    try:
        async with asyncio.timeout(timeout), database.connection(pool) as conn:
            return await scrape_stats(conn)
    except _UNREADABLE as e:
        log.warning("metrics could not read the database", error=str(e))
        return None


async def keep_young_statistics(pool: asyncpg.Pool) -> None:
    """Run until cancelled: a new database gets its first ANALYZE once its tables have
    grown, not a minute late (kevin.store.analyze)."""
    await analyze.keep_young_statistics(pool)
