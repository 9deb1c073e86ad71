"""Orchestration: each operation is one transaction over the store."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from kevin.domain.errors import (
    ExistsWithDifferentFields,
    NotFound,
    PreconditionRequired,
    TradeCancelled,
    VersionConflict,
)
from kevin.domain.models import Trade, TradeSubmission, TradeTerms, differing_fields
from kevin.store import database, participants
from kevin.store import trades as store
from kevin.store.trades import NewVersion, PageQuery

SubmitResult = Literal["created", "exists"]


@dataclass(frozen=True)
class Page:
    trades: list[Trade]
    next_after: tuple[str, str] | None


class Kevin:
    """The service's operations, independent of HTTP."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # --- participants ----------------------------------------------------------------

    async def create_participant(self, name: str) -> str:
        async with database.transaction(self.pool) as conn:
            return await participants.create(conn, name)

    async def participant_for_key(self, api_key: str) -> str | None:
        async with database.connection(self.pool) as conn:
            return await participants.for_key(conn, api_key)

    # --- writes ------------------------------------------------------------------------

    async def submit(
        self, participant: str, submission: TradeSubmission
    ) -> tuple[SubmitResult, Trade]:
        """Create a trade, or recognise an idempotent resubmission of it."""
        terms = TradeTerms.model_validate(submission.model_dump(exclude={"trade_id"}))
        new = NewVersion(
            participant=participant, trade_id=submission.trade_id, version=1,
            status="unmatched", reason="submitted", terms=terms, actor=participant,
        )
        async with database.transaction(self.pool) as conn:
            created = await store.insert_version(conn, new)
            if created is not None:
                return "created", created
            stored = await store.latest(conn, participant, submission.trade_id)
        assert stored is not None  # version 1 exists and a trade always has a latest row
        fields = differing_fields(stored.terms(), terms)
        if fields:
            raise ExistsWithDifferentFields(fields)
        return "exists", stored

    async def amend(
        self, participant: str, trade_id: str, if_match: int | None, terms: TradeTerms
    ) -> Trade:
        async with database.transaction(self.pool) as conn:
            current = await self._current_for_change(conn, participant, trade_id, if_match)
            return await store.append_version(
                conn, current, status="unmatched", reason="amended", terms=terms,
                actor=participant,
            )

    async def cancel(self, participant: str, trade_id: str, if_match: int | None) -> Trade:
        async with database.transaction(self.pool) as conn:
            current = await self._current_for_change(conn, participant, trade_id, if_match)
            return await store.append_version(
                conn, current, status="cancelled", reason="cancelled", actor=participant,
            )

    @staticmethod
    async def _current_for_change(
        conn: asyncpg.Connection, participant: str, trade_id: str, if_match: int | None
    ) -> Trade:
        current = await store.latest(conn, participant, trade_id)
        if current is None:
            raise NotFound(f"no trade {trade_id}")
        if if_match is None:
            raise PreconditionRequired(details={"current_version": current.version})
        if current.status == "cancelled":
            raise TradeCancelled(f"trade {trade_id} is cancelled",
                                 {"current_version": current.version})
        if current.version != if_match:
            raise VersionConflict(current.version, if_match)
        return current

    # --- reads -------------------------------------------------------------------------

    async def get(self, participant: str, trade_id: str, as_of: datetime | None = None) -> Trade:
        async with database.connection(self.pool) as conn:
            if as_of is None:
                trade = await store.latest(conn, participant, trade_id)
            else:
                trade = await store.as_of(conn, participant, trade_id, as_of)
        if trade is None:
            suffix = f" as of {as_of.isoformat()}" if as_of else ""
            raise NotFound(f"no trade {trade_id}{suffix}")
        return trade

    async def versions(self, participant: str, trade_id: str) -> list[Trade]:
        async with database.connection(self.pool) as conn:
            found = await store.versions(conn, participant, trade_id)
        if not found:
            raise NotFound(f"no trade {trade_id}")
        return found

    async def list(self, query: PageQuery) -> Page:
        probe = dataclasses.replace(query, limit=query.limit + 1)
        async with database.connection(self.pool) as conn:
            found = await store.page(conn, probe)
        more = len(found) > query.limit
        found = found[: query.limit]
        next_after = (found[-1].participant, found[-1].trade_id) if more else None
        return Page(found, next_after)
