"""The feed's store side: assigning seqs (the sequencer's round), reading updates in seq
order, and the relay's durable position. SQL lives in kevin.store.feed_queries."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from kevin.domain.feed import FeedUpdate
from kevin.store import feed_queries as q
from kevin.store.trades import trade_from_row


@dataclass(frozen=True)
class Round:
    """What one sequencer round did."""

    locked: bool  # False: another sequencer holds the lock; nothing was done
    assigned: int = 0
    top: int | None = None  # the highest seq assigned in this round


async def any_unsequenced(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(q.ANY_UNSEQUENCED))


async def sequence_round(conn: asyncpg.Connection, batch: int) -> Round:
    """Assign seqs to up to ``batch`` committed updates, in one transaction.

    The caller owns no transaction; this opens and commits its own, so the assigned seqs
    (and the notification) become visible together at its commit.
    """
    async with conn.transaction():
        if not await conn.fetchval(q.TRY_SEQUENCER_LOCK, q.SEQUENCER_LOCK_KEY):
            return Round(locked=False)
        seqs = await conn.fetch(q.SEQUENCE_BATCH, batch)
        if not seqs:
            return Round(locked=True)
        top = max(r["seq"] for r in seqs)
        await conn.execute(q.NOTIFY_SEQUENCED, q.FEED_CHANNEL, str(top))
    return Round(locked=True, assigned=len(seqs), top=top)


async def max_seq(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(q.MAX_SEQ))


async def updates_after(
    conn: asyncpg.Connection, after: int, participant: str | None, limit: int
) -> list[FeedUpdate]:
    """Sequenced updates with seq > ``after``, ascending; ``participant`` None = all."""
    if participant is None:
        rows = await conn.fetch(q.SELECT_UPDATES_ALL, after, limit)
    else:
        rows = await conn.fetch(q.SELECT_UPDATES_FOR_PARTICIPANT, after, participant, limit)
    return [FeedUpdate.of(row["seq"], trade_from_row(row)) for row in rows]


async def relay_checkpoint(conn: asyncpg.Connection, name: str) -> int:
    return int(await conn.fetchval(q.SELECT_RELAY_CHECKPOINT, name) or 0)


async def save_relay_checkpoint(conn: asyncpg.Connection, name: str, seq: int) -> None:
    await conn.execute(q.UPSERT_RELAY_CHECKPOINT, name, seq)
