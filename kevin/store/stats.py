"""Figures /metrics reads from the database at each scrape. Each statement is a probe of
a small partial index, so a scrape costs the same with a million trades as with ten."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

# ix_trades_resting_since: the first entry of a partial index on the resting trades.
OLDEST_RESTING = """
SELECT min(first_submitted_at) FROM trades
WHERE latest AND status IN ('unmatched', 'mismatched')
"""

# ix_feed_unsequenced holds only rows still waiting for a seq, normally a handful; the
# count is capped so a stalled sequencer makes the scrape no slower than a bounded scan.
FEED_BACKLOG = """
SELECT count(*) AS unsequenced, min(written_at) AS oldest_unsequenced,
       (SELECT max(seq) FROM feed) AS last_seq,
       clock_timestamp() AS now
FROM (SELECT written_at FROM feed WHERE seq IS NULL ORDER BY id LIMIT $1) AS waiting
"""

BACKLOG_CAP = 100_000

# One row per relay (a handful): its position and the updates it published as stubs.
RELAYS = "SELECT name, seq, stubbed FROM relay_checkpoints"


@dataclass(frozen=True)
class ScrapeStats:
    now: datetime
    oldest_resting: datetime | None
    unsequenced: int
    oldest_unsequenced: datetime | None
    last_seq: int | None
    relays: dict[str, tuple[int, int]]  # name -> (position, stubbed)


async def scrape_stats(conn: asyncpg.Connection) -> ScrapeStats:
    oldest = await conn.fetchval(OLDEST_RESTING)
    row = await conn.fetchrow(FEED_BACKLOG, BACKLOG_CAP)
    relays = {r["name"]: (r["seq"], r["stubbed"]) for r in await conn.fetch(RELAYS)}
    return ScrapeStats(now=row["now"], oldest_resting=oldest, unsequenced=row["unsequenced"],
                       oldest_unsequenced=row["oldest_unsequenced"], last_seq=row["last_seq"],
                       relays=relays)
