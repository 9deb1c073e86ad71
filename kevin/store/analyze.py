"""First statistics for a young database.

PostgreSQL plans a prepared statement and keeps that plan until something invalidates
it, an ANALYZE of a table it reads among others. A new database has no statistics, and
autovacuum analyzes a new table only when it first gets round to it (autovacuum_naptime,
a minute by default). Meanwhile Kevin's statements are planned for near-empty tables
(sequential scans, hash joins over a whole table) and keep those plans while the tables
grow, each execution costing more as they do (docs/performance.md, change 11). So the
busy tables are analyzed once each, as soon as they hold a
few thousand rows; from then on autovacuum keeps their statistics as it always does.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from kevin.store import database

log = structlog.get_logger(__name__)

# The tables every submission writes, and the statement that analyzes each.
ANALYZE = {"trades": "ANALYZE trades", "feed": "ANALYZE feed"}
TABLES = tuple(ANALYZE)
# Rows changed since the table was created before it is worth analyzing: by then an index
# plan beats a scan, and the plans made from these statistics stay right as it grows.
MIN_CHANGES = 2_000
# One process analyzes at a time (any constant shared by every Kevin process).
LOCK_KEY = 0x4B6576696E537461  # "KevinSta"

NOT_YET_ANALYZED = """
SELECT relname, n_mod_since_analyze FROM pg_stat_user_tables
WHERE schemaname = current_schema() AND relname = ANY($1::text[])
  AND last_analyze IS NULL AND last_autoanalyze IS NULL
"""


async def analyze_young_tables(conn: asyncpg.Connection) -> tuple[list[str], bool]:
    """ANALYZE each table of TABLES never analyzed yet that has seen MIN_CHANGES changes.
    Returns the tables analyzed now, and whether any is still waiting for its first."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LOCK_KEY):
            return [], True
        young = await conn.fetch(NOT_YET_ANALYZED, list(TABLES))
        due = [r["relname"] for r in young if r["n_mod_since_analyze"] >= MIN_CHANGES]
        for table in due:
            await conn.execute(ANALYZE[table], timeout=60)
    return due, len(due) < len(young)


async def keep_young_statistics(pool: asyncpg.Pool, interval: float = 1.0) -> None:
    """Until every busy table has been analyzed once (by this, by another process or by
    autovacuum): check every ``interval`` seconds. Database trouble is logged and
    retried; it never ends the server."""
    while True:
        try:
            async with database.connection(pool) as conn:
                analyzed, waiting = await analyze_young_tables(conn)
            if analyzed:
                log.info("analyzed young tables", tables=analyzed)
            if not waiting:
                return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("statistics: check failed, retrying", error=repr(e))
        await asyncio.sleep(interval)
