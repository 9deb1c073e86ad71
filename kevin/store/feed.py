"""The feed's store side: assigning seqs (the sequencer's round), reading updates in seq
order, and the relay's durable position. SQL lives in kevin.store.feed_queries."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from kevin import jsoncodec
from kevin.domain.feed import AnyUpdate, FeedUpdate, OverdueNotice, OverdueUpdate, ProposalUpdate
from kevin.store import feed_queries as q
from kevin.store.proposals import proposal_from_row
from kevin.store.trades import trade_from_row


@dataclass(frozen=True)
class Round:
    """What one sequencer round did."""

    assigned: int = 0
    top: int | None = None  # the highest seq assigned in this round
    # Rows of the backlog wait on a transaction still in flight (maybe not a writer's:
    # anything holding an xid, an ANALYZE say, holds the horizon back).
    waiting: bool = False
    # The server's clock (microseconds since the epoch) when the round's statement began:
    # every commit that had finished by then was in its snapshot.
    started: int | None = None


async def take_lead(conn: asyncpg.Connection) -> bool:
    """Try to become the one sequencer (a session-level advisory lock, held until this
    connection's session ends: the caller never hands a leading connection back)."""
    return bool(await conn.fetchval(q.TAKE_LEAD, q.SEQUENCER_LOCK_KEY))


async def name_leader(conn: asyncpg.Connection) -> None:
    """Name the lead's connection in pg_stat_activity (feed_queries.NAME_LEADER)."""
    await conn.fetchval(q.NAME_LEADER)


async def sequence_round(conn: asyncpg.Connection, batch: int) -> Round:
    """Assign seqs to up to ``batch`` committed updates and wake the readers, in one
    autocommitted statement. ``conn`` must hold the lead (take_lead) and no transaction."""
    row = await conn.fetchrow(q.SEQUENCE_BATCH, batch, q.FEED_CHANNEL)
    return Round(assigned=row["assigned"], top=row["top"], waiting=row["waiting"],
                 started=row["started"])


async def tell_leader(conn: asyncpg.Connection, since: float = 0.0) -> None:
    """Wake the leading sequencer (in whichever process) to sequence the writes this
    process committed, the last of them ``since`` seconds before the call."""
    await conn.execute(q.NOTIFY_WRITTEN, q.WRITTEN_CHANNEL, max(0, int(since * 1_000_000)))


async def max_seq(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(q.MAX_SEQ))


async def any_unsequenced(conn: asyncpg.Connection) -> bool:
    """Whether a committed update (visible to ``conn``) still waits for the sequencer."""
    return bool(await conn.fetchval(q.ANY_UNSEQUENCED))


async def updates_after(
    conn: asyncpg.Connection, after: int, participant: str | None, limit: int
) -> list[AnyUpdate]:
    """Sequenced updates with seq > ``after``, ascending; ``participant`` None = all."""
    if participant is None:
        rows = await conn.fetch(q.SELECT_UPDATES_ALL, after, limit)
    else:
        rows = await conn.fetch(q.SELECT_UPDATES_FOR_PARTICIPANT, after, participant, limit)
    return [_update(row) for row in rows]


def _update(row: asyncpg.Record) -> AnyUpdate:
    if row["trade_id"] is not None:
        return FeedUpdate.of(row["seq"], trade_from_row(row))
    if row["notice"] is not None:
        return OverdueUpdate.of(row["seq"], row["feed_participant"],
                                notice_from_json(row["notice"]))
    proposal = row["proposal"]
    if isinstance(proposal, str | bytes):
        proposal = jsoncodec.loads(proposal)
    return ProposalUpdate.of(row["seq"], row["feed_participant"],
                             proposal_from_row(proposal))


def notice_from_json(value: object) -> OverdueNotice:
    """An overdue_notices row read as one JSON value (to_jsonb)."""
    row = jsoncodec.loads(value) if isinstance(value, str | bytes) else value
    assert isinstance(row, dict)
    return OverdueNotice(
        notice_id=row["id"], trade_participant=row["participant"], trade_id=row["trade_id"],
        version=row["version"], status=row["status"], counterparty=row["counterparty"],
        product=row["product"], trade_date=row["trade_date"], cutoff_at=row["cutoff_at"],
        recorded_at=row["noticed_at"])


async def relay_checkpoint(conn: asyncpg.Connection, name: str) -> int:
    return int(await conn.fetchval(q.SELECT_RELAY_CHECKPOINT, name) or 0)


async def save_relay_checkpoint(conn: asyncpg.Connection, name: str, seq: int,
                               stubbed: int = 0) -> None:
    """Move the relay's position to ``seq``, counting ``stubbed`` more stubs."""
    await conn.execute(q.UPSERT_RELAY_CHECKPOINT, name, seq, stubbed)
