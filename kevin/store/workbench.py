"""The web workbench's store: server-side sessions and the exceptions lists."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

import asyncpg

from kevin.domain.models import Trade
from kevin.store import workbench_queries as q
from kevin.store.participants import hash_key
from kevin.store.trades import trade_from_row

Tab = Literal["mismatched", "unmatched", "alleged", "overdue", "matched_today"]
TABS: tuple[Tab, ...] = ("mismatched", "unmatched", "alleged", "overdue", "matched_today")
# The tabs counted by one statement (COUNT_TABS); overdue is counted from its groups.
_COUNTED: tuple[Tab, ...] = ("mismatched", "unmatched", "alleged", "matched_today")


@dataclass(frozen=True)
class StoredSession:
    participant: str | None  # None: the admin
    credential_hash: bytes
    csrf_token: str
    expires_at: datetime
    label: str | None  # the label of the key that logged in


async def insert_session(conn: asyncpg.Connection, token: str, participant: str | None,
                         credential: str, csrf_token: str, lifetime: timedelta) -> datetime:
    """Store a session under the hash of its cookie token; returns when it expires."""
    # Expired sessions go first: a login is rare enough to pay for the range delete.
    await conn.execute(q.DELETE_EXPIRED_SESSIONS)
    return await conn.fetchval(q.INSERT_SESSION, hash_key(token), participant,
                               hash_key(credential), csrf_token, lifetime)


async def find_session(conn: asyncpg.Connection, token: str) -> StoredSession | None:
    row = await conn.fetchrow(q.SELECT_SESSION, hash_key(token))
    if row is None:
        return None
    return StoredSession(row["participant"], bytes(row["credential_hash"]),
                         row["csrf_token"], row["expires_at"], row["label"])


async def delete_session(conn: asyncpg.Connection, token: str) -> None:
    await conn.execute(q.DELETE_SESSION, hash_key(token))


@dataclass(frozen=True)
class ExceptionsQuery:
    """One tab of the exceptions page. ``participant`` is whose book (None: every book,
    for the admin); ``other`` the counterparty (for alleged: who alleges)."""

    tab: Tab
    participant: str | None
    product: str | None = None
    other: str | None = None
    submitted_before: datetime | None = None
    limit: int = 500

    @property
    def has_book(self) -> bool:
        return self.participant is not None

    def filters(self) -> tuple[str | None, str | None, str | None, datetime | None]:
        return self.participant, self.product, self.other, self.submitted_before


_TAB_STATEMENTS = {"mismatched": q.SELECT_MISMATCHED, "unmatched": q.SELECT_UNMATCHED,
                   "alleged": {True: q.SELECT_ALLEGED, False: q.SELECT_ALLEGED}}


async def exceptions(conn: asyncpg.Connection, query: ExceptionsQuery,
                     today: datetime) -> list[Trade]:
    if query.tab == "matched_today":
        rows = await conn.fetch(q.SELECT_MATCHED_TODAY[query.has_book], *query.filters(), today,
                                query.limit)
    else:
        rows = await conn.fetch(_TAB_STATEMENTS[query.tab][query.has_book], *query.filters(),
                                query.limit)
    return [trade_from_row(r) for r in rows]


async def tab_counts(conn: asyncpg.Connection, query: ExceptionsQuery, today: datetime,
                     bound: int) -> dict[str, int]:
    row = await conn.fetchrow(q.COUNT_TABS[query.has_book], *query.filters(), today, bound)
    return {tab: row[tab] for tab in _COUNTED}


@dataclass(frozen=True)
class OpenGroup:
    """Open trades sharing what decides whether they are overdue: their pair, product and
    trade date. ``alleged``: trades others submitted naming the queried book."""

    alleged: bool
    participant: str
    counterparty: str
    product: str
    trade_date: date
    open: int


async def open_groups(conn: asyncpg.Connection, query: ExceptionsQuery) -> list[OpenGroup]:
    """The open trades of the query's book (the admin's: every book) and those alleged
    against it, grouped, under the query's filters."""
    return [OpenGroup(r["alleged"], r["participant"], r["counterparty"], r["product"],
                      r["trade_date"], r["open"])
            for r in await conn.fetch(q.OPEN_GROUPS[query.has_book], *query.filters())]


async def overdue_trades(conn: asyncpg.Connection, query: ExceptionsQuery,
                         overdue: list[tuple[OpenGroup, datetime]]) -> list[Trade]:
    """The open trades of the overdue groups (each with its cut-off), most overdue first."""
    if not overdue or query.limit == 0:
        return []
    rows = await conn.fetch(
        q.SELECT_OVERDUE, query.submitted_before,
        [g.participant for g, _ in overdue], [g.counterparty for g, _ in overdue],
        [g.product for g, _ in overdue], [g.trade_date for g, _ in overdue],
        [at for _, at in overdue], query.limit)
    return [trade_from_row(r) for r in rows]
