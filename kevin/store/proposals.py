"""The store's side of proposals: open, decide, read. SQL lives in
kevin.store.proposal_queries; the lapse on a new trade version is a trigger (alembic 0011)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from kevin.domain.errors import ProposalExists
from kevin.domain.models import Trade
from kevin.domain.proposals import (
    Difference,
    Proposal,
    ProposalKind,
    ProposalState,
    pair_key,
)
from kevin.store import proposal_queries as q

NIL = UUID(int=0)


def proposal_from_row(row: Mapping[str, Any]) -> Proposal:
    return Proposal(
        proposal_id=row["proposal_id"], version=row["version"], kind=row["kind"],
        state=row["state"], proposer=row["proposer"], trade_id=row["trade_id"],
        trade_version=row["trade_version"], counterparty=row["counterparty"],
        counterparty_trade_id=row["counterparty_trade_id"],
        counterparty_trade_version=row["counterparty_trade_version"],
        differences=[Difference(**d) for d in row["differences"]], comment=row["comment"],
        actor=row["actor"], created_at=row["created_at"], recorded_at=row["recorded_at"])


async def open_proposal(conn: asyncpg.Connection, kind: ProposalKind, ours: Trade,
                        theirs: Trade, differences: Sequence[Difference],
                        comment: str | None) -> Proposal:
    """Write version 1 (open) and its feed rows; ProposalExists when one of this kind is
    already open for these two trades (whichever side proposed it)."""
    key = pair_key((ours.participant, ours.trade_id), (theirs.participant, theirs.trade_id))
    try:
        async with conn.transaction():  # a savepoint: read the holder after a refusal
            row = await conn.fetchrow(
                q.INSERT_OPEN, uuid4(), kind, ours.participant, ours.trade_id, ours.version,
                theirs.participant, theirs.trade_id, theirs.version, key,
                [d.model_dump() for d in differences], comment)
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name != "ix_proposals_one_open":
            raise
        holder = await conn.fetchrow(q.SELECT_OPEN_FOR_PAIR, kind, key)
        raise ProposalExists(
            f"a {kind} proposal for these two trades is already open",
            {"proposal_id": str(holder["proposal_id"]) if holder else None}) from error
    return proposal_from_row(row)


async def decide(conn: asyncpg.Connection, current: Proposal, state: ProposalState,
                 comment: str | None, actor: str) -> Proposal | None:
    """Write the decision on ``current`` (which must be open and latest); None when
    another decision (or a lapse) got there first."""
    row = await conn.fetchrow(q.DECIDE, current.proposal_id, current.version, state, comment,
                              actor)
    return proposal_from_row(row) if row is not None else None


async def latest(conn: asyncpg.Connection, proposal_id: UUID) -> Proposal | None:
    row = await conn.fetchrow(q.SELECT_LATEST, proposal_id)
    return proposal_from_row(row) if row is not None else None


async def page(conn: asyncpg.Connection, participant: str | None, state: str | None,
               after: UUID | None, limit: int) -> list[Proposal]:
    after = after or NIL
    if participant is None:
        rows = await conn.fetch(q.SELECT_PAGE_ALL, state, after, limit)
    else:
        rows = await conn.fetch(q.SELECT_PAGE, participant, state, after, limit)
    return [proposal_from_row(r) for r in rows]
