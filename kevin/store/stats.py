"""Figures /metrics reads from the database at each scrape. Each statement reads a small
partial index: a probe of its first entry, or (overdue trades) the open trades only,
grouped — its cost grows with the open trades, not with the matched history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from kevin.domain.cutoffs import cutoff_at, is_overdue
from kevin.store.cutoffs import live_cutoffs

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


# The open trades by what decides their cut-off and their trade date: counted over the
# partial index of live unmatched/mismatched trades (ix_trades_resting), so the rows are
# as few as the open (pair, product, day) groups, not the trades.
OPEN_GROUPS = """
SELECT participant, counterparty, product, trade_date, count(*) AS open FROM trades
WHERE latest AND status IN ('unmatched', 'mismatched')
GROUP BY participant, counterparty, product, trade_date
"""


@dataclass(frozen=True)
class ScrapeStats:
    now: datetime
    oldest_resting: datetime | None
    unsequenced: int
    oldest_unsequenced: datetime | None
    last_seq: int | None
    relays: dict[str, tuple[int, int]]  # name -> (position, stubbed)
    overdue_by_product: dict[str, int]


async def scrape_stats(conn: asyncpg.Connection) -> ScrapeStats:
    oldest = await conn.fetchval(OLDEST_RESTING)
    row = await conn.fetchrow(FEED_BACKLOG, BACKLOG_CAP)
    relays = {r["name"]: (r["seq"], r["stubbed"]) for r in await conn.fetch(RELAYS)}
    overdue = await overdue_by_product(conn, row["now"])
    return ScrapeStats(now=row["now"], oldest_resting=oldest, unsequenced=row["unsequenced"],
                       oldest_unsequenced=row["oldest_unsequenced"], last_seq=row["last_seq"],
                       relays=relays, overdue_by_product=overdue)


async def overdue_by_product(conn: asyncpg.Connection, now: datetime) -> dict[str, int]:
    """How many live trades are overdue at ``now``, by product (products with none: 0 when
    they have open trades)."""
    deciding = await live_cutoffs(conn)
    counts: dict[str, int] = {}
    for group in await conn.fetch(OPEN_GROUPS):
        product = group["product"]
        cutoff = deciding.for_trade(group["participant"], group["counterparty"], product)
        late = cutoff is not None and is_overdue("unmatched", cutoff_at(group["trade_date"],
                                                                       cutoff), now)
        counts[product] = counts.get(product, 0) + (group["open"] if late else 0)
    return counts
