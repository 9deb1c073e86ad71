"""Chasers' store side: the open trades the overdue scan looks at, the live cut-offs, and
recording notices with their feed updates. Every statement reads an index: the open
trades by trade date (ix_trades_open_by_trade_date), the feed by seq, a version by its
key; each returns at most a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

_OPEN_COLUMNS = "participant, trade_id, version, counterparty, product, trade_date, status"

# The open trades of some trade dates ($1), after a key ($2, $3, $4) in the index's
# order, a batch ($5) at a time.
OPEN_ON_DATES = f"""
SELECT {_OPEN_COLUMNS} FROM trades
WHERE latest AND status IN ('unmatched', 'mismatched') AND trade_date = ANY($1::date[])
  AND (trade_date, participant, trade_id) > ($2::date, $3::text, $4::text)
ORDER BY trade_date, participant, trade_id
LIMIT $5
"""  # noqa: S608 (a constant column list only)

# The open trades of every trade date up to $1, after a key, a batch at a time: the walk
# a new leader (or a changed cut-off) makes once.
OPEN_UNTIL = f"""
SELECT {_OPEN_COLUMNS} FROM trades
WHERE latest AND status IN ('unmatched', 'mismatched') AND trade_date <= $1
  AND (trade_date, participant, trade_id) > ($2::date, $3::text, $4::text)
ORDER BY trade_date, participant, trade_id
LIMIT $5
"""  # noqa: S608 (a constant column list only)

# The trade versions announced on the feed in seqs ($1, $2] that are still their trade's
# latest and open: a trade that was submitted late, re-opened (a broken match) or amended
# to an earlier trade date may be overdue at once. The feed's seq index, then a key probe
# per row: LATERAL with LIMIT 1 (a version is one row), which the planner cannot flatten
# into a join, so that a generic plan, which cannot tell how narrow the window is, never
# hashes the whole trades table for it.
OPENED_ON_FEED = f"""
SELECT t.*
FROM feed f
CROSS JOIN LATERAL (
    SELECT {_OPEN_COLUMNS} FROM trades
    WHERE participant = f.participant AND trade_id = f.trade_id AND version = f.version
      AND latest AND status IN ('unmatched', 'mismatched')
    LIMIT 1
) AS t
WHERE f.seq > $1 AND f.seq <= $2 AND f.trade_id IS NOT NULL
"""  # noqa: S608 (a constant column list only)

MAX_SEQ = "SELECT coalesce(max(seq), 0) FROM feed"

# Record the notices and their two feed updates in one statement (one transaction). A
# candidate counts only if its version is still the latest and open when recorded (a
# trade matched since the scan read it is not chased). ON CONFLICT DO NOTHING on the
# notice's unique key (participant, trade_id, trade_date): a notice another scanner
# recorded, now or before a restart, is not recorded again and gets no feed update.
RECORD_NOTICES = """
WITH candidates AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[])
        AS c(participant, trade_id, version, cutoff_at)
), still_open AS (
    SELECT t.participant, t.trade_id, t.trade_date, t.version, t.counterparty, t.product,
           t.status, c.cutoff_at
    FROM candidates c
    CROSS JOIN LATERAL (  -- a key probe per candidate (see OPENED_ON_FEED)
        SELECT * FROM trades
        WHERE participant = c.participant AND trade_id = c.trade_id
          AND version = c.version AND latest AND status IN ('unmatched', 'mismatched')
        LIMIT 1
    ) AS t
), noticed AS (
    INSERT INTO overdue_notices (participant, trade_id, trade_date, version, counterparty,
                                 product, status, cutoff_at)
    SELECT participant, trade_id, trade_date, version, counterparty, product, status,
           cutoff_at
    FROM still_open
    ORDER BY participant, trade_id
    ON CONFLICT (participant, trade_id, trade_date) DO NOTHING
    RETURNING id, participant, counterparty
), updates AS (
    INSERT INTO feed (participant, notice_id)
    SELECT participant, id FROM noticed
    UNION ALL
    SELECT counterparty, id FROM noticed
)
SELECT count(*) FROM noticed
"""

# The walk's starting key: before every real one.
WALK_START = (date.min, "", "")


@dataclass(frozen=True)
class OpenTrade:
    participant: str
    trade_id: str
    version: int
    counterparty: str
    product: str
    trade_date: date
    status: str

    @property
    def key(self) -> tuple[date, str, str]:
        return self.trade_date, self.participant, self.trade_id


def _open(row: asyncpg.Record) -> OpenTrade:
    return OpenTrade(row["participant"], row["trade_id"], row["version"],
                     row["counterparty"], row["product"], row["trade_date"], row["status"])


async def open_on_dates(conn: asyncpg.Connection, dates: Sequence[date],
                        after: tuple[date, str, str], limit: int) -> list[OpenTrade]:
    rows = await conn.fetch(OPEN_ON_DATES, list(dates), *after, limit)
    return [_open(r) for r in rows]


async def open_until(conn: asyncpg.Connection, until: date, after: tuple[date, str, str],
                     limit: int) -> list[OpenTrade]:
    rows = await conn.fetch(OPEN_UNTIL, until, *after, limit)
    return [_open(r) for r in rows]


async def opened_on_feed(conn: asyncpg.Connection, after: int, upto: int) -> list[OpenTrade]:
    return [_open(r) for r in await conn.fetch(OPENED_ON_FEED, after, upto)]


async def max_seq(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(MAX_SEQ))


async def record_notices(conn: asyncpg.Connection,
                         late: Sequence[tuple[OpenTrade, datetime]]) -> int:
    """Record a notice for each (trade, its cut-off) not yet noticed for its trade date,
    with its two feed updates; how many were new."""
    if not late:
        return 0
    return int(await conn.fetchval(
        RECORD_NOTICES, [t.participant for t, _ in late], [t.trade_id for t, _ in late],
        [t.version for t, _ in late], [at for _, at in late]))
