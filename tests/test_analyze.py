"""A young database's first statistics (kevin.store.analyze)."""

from __future__ import annotations

import asyncio
import contextlib

from kevin.store import analyze as statistics
from tests.conftest import wait_for

ROWS = statistics.MIN_CHANGES + 500

INSERT_TRADES = """
INSERT INTO trades (participant, trade_id, version, latest, status, reason, counterparty,
                    side, product, quantity, price, currency, trade_date, settlement_date,
                    actor, first_submitted_at)
SELECT 'BANKA', 'T-' || i, 1, true, 'unmatched', 'submitted', 'BANKB', 'sell', 'XAU', 1,
       1000 + i, 'USD', '2026-11-20', '2026-11-24', 'BANKA', clock_timestamp()
FROM generate_series($1::int, $2::int) AS i
"""
INSERT_FEED = """
INSERT INTO feed (participant, trade_id, version)
SELECT 'BANKA', 'T-' || i, 1 FROM generate_series($1::int, $2::int) AS i
"""


async def _analyzed(conn) -> set[str]:
    rows = await conn.fetch(
        "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY($1::text[]) "
        "AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)",
        list(statistics.TABLES))
    return {r["relname"] for r in rows}


async def test_busy_tables_are_analyzed_once_they_hold_rows(pool, conn):
    assert await _analyzed(conn) == set()
    await conn.execute(INSERT_TRADES, 1, 100)
    await conn.execute(INSERT_FEED, 1, 100)
    # Too few rows to be worth it: nothing analyzed, still waiting.
    assert await statistics.analyze_young_tables(conn) == ([], True)
    assert await _analyzed(conn) == set()

    task = asyncio.create_task(statistics.keep_young_statistics(pool, interval=0.05))
    try:
        await conn.execute(INSERT_TRADES, 101, ROWS)
        await conn.execute(INSERT_FEED, 101, ROWS)
        # The counters reach pg_stat_user_tables within a second or so; then both tables
        # are analyzed and the task, its work done, ends by itself.
        await wait_for(lambda: _is_done(task), timeout=15)
        assert task.exception() is None
        assert await _analyzed(conn) == set(statistics.TABLES)
        estimated = await conn.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'feed'")
        assert estimated == ROWS
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # Once analyzed, never again from here (autovacuum's job from now on).
    assert await statistics.analyze_young_tables(conn) == ([], False)


async def _is_done(task: asyncio.Task[None]) -> bool:
    return task.done()
