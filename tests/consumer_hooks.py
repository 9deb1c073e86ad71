"""Consumer hooks for the subprocess tests, one per kind of event: each writes one effect
row in the applying transaction (no unique constraint: a doubled effect would show as two
rows)."""

from __future__ import annotations

import asyncpg

from kevin.consumer import OverdueEvent, ProposalEvent, Update

NOT_A_FUNCTION = "record"


async def record(conn: asyncpg.Connection, update: Update) -> None:
    await conn.execute(
        "INSERT INTO effects (participant, trade_id, version) VALUES ($1, $2, $3)",
        update.participant, update.trade_id, update.version)


async def record_proposal(conn: asyncpg.Connection, event: ProposalEvent) -> None:
    await conn.execute(
        "INSERT INTO proposal_effects (participant, proposal_id, version, state) "
        "VALUES ($1, $2, $3, $4)", event.participant, event.proposal_id, event.version,
        event.state)


async def record_overdue(conn: asyncpg.Connection, event: OverdueEvent) -> None:
    await conn.execute(
        "INSERT INTO overdue_effects (participant, notice_id, trade_id) VALUES ($1, $2, $3)",
        event.participant, event.notice_id, event.body["trade_id"])
