"""The web workbench's own operations: sessions, and the reads behind the exceptions page.

Every change a page makes goes through ``kevin.engine.service.TradeService``, the same
operations the JSON API calls; this module only adds what a browser needs on top.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from kevin.domain.cutoffs import cutoff_at, is_overdue
from kevin.domain.errors import Unauthorized
from kevin.domain.keys import AdminTokens
from kevin.domain.models import AgedTrade, Trade
from kevin.domain.notes import NotesSummary
from kevin.engine.ageing import Clock, age_trades, aged, system_clock
from kevin.store import database, participants
from kevin.store import notes as store_notes
from kevin.store import workbench as store
from kevin.store.cutoffs import live_cutoffs
from kevin.store.workbench import TABS, ExceptionsQuery

SESSION_LIFETIME = timedelta(hours=8)
# A tab's count stops here: counting a whole book on every live refresh costs too much.
COUNT_BOUND = 1000


@dataclass(frozen=True)
class Session:
    participant: str | None  # None: the admin
    csrf_token: str
    expires_at: datetime
    # The hash of the key (or admin token) that logged in: what the session writes is
    # written with that key (a note's author).
    credential_hash: bytes
    label: str | None = None  # that key's label: whom the pages greet

    @property
    def is_admin(self) -> bool:
        return self.participant is None


@dataclass(frozen=True)
class Exceptions:
    """One tab of the exceptions page: its trades with their cut-offs at ``now``, the count
    on every tab, and the next cut-off still to come among the open trades the tabs
    cover (when the overdue tab next changes without a write)."""

    trades: list[AgedTrade]
    counts: dict[str, int]
    now: datetime
    next_cutoff: datetime | None
    # The notes of the rows that are the book's own (a trade alleged against it is its
    # counterparty's, and so are that trade's notes), by (participant, trade_id).
    notes: dict[tuple[str, str], NotesSummary]


class Workbench:
    def __init__(self, pool: asyncpg.Pool, admin_tokens: AdminTokens,
                 lifetime: timedelta = SESSION_LIFETIME, clock: Clock = system_clock) -> None:
        self.pool = pool
        self.admin_tokens = admin_tokens
        self.lifetime = lifetime
        # "Now" for cut-offs: the service's clock (kevin.engine.service.TradeService.clock).
        self.clock = clock

    async def login(self, credential: str) -> tuple[str, Session]:
        """A new session for an API key or the admin token: its cookie token and itself."""
        credential = credential.strip()
        if not credential:
            raise Unauthorized("enter an API key or the admin token")
        async with database.transaction(self.pool) as conn:
            if self.admin_tokens.accepts(credential):
                participant = None
            else:
                participant = await participants.for_key(conn, credential)
                if participant is None:
                    raise Unauthorized("the API key is not valid")
            token, csrf_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
            await store.insert_session(conn, token, participant, credential, csrf_token,
                                       self.lifetime)
            found = await store.find_session(conn, token)
        assert found is not None  # inserted by this transaction, for its full lifetime
        return token, _session(found)

    async def session(self, token: str) -> Session | None:
        """The live session behind a cookie token, or None (unknown, expired, logged out,
        or its credential no longer valid)."""
        async with database.connection(self.pool) as conn:
            found = await store.find_session(conn, token)
        if found is None:
            return None
        if found.participant is None:
            # The admin token may have been changed since: the session ends with it (a
            # token kept as KEVIN_ADMIN_TOKEN_PREVIOUS keeps its sessions meanwhile).
            if not self.admin_tokens.accepts_hash(found.credential_hash):
                return None
        return _session(found)

    async def logout(self, token: str) -> None:
        async with database.transaction(self.pool) as conn:
            await store.delete_session(conn, token)

    async def exceptions(self, query: ExceptionsQuery) -> Exceptions:
        """One tab's trades, and the count on every tab, under the same filters. The
        overdue tab: the book's own overdue trades and those alleged against it."""
        now = self.clock()
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        async with database.connection(self.pool) as conn:
            deciding = await live_cutoffs(conn)
            due = []
            for group in await store.open_groups(conn, query):
                cutoff = deciding.for_trade(group.participant, group.counterparty,
                                            group.product)
                if cutoff is not None:
                    due.append((group, cutoff_at(group.trade_date, cutoff)))
            overdue = [(g, at) for g, at in due if is_overdue("unmatched", at, now)]
            if query.tab == "overdue":
                trades = await store.overdue_trades(conn, query, overdue)
            else:
                trades = await store.exceptions(conn, query, today)
            counts = await store.tab_counts(conn, query, today, COUNT_BOUND)
            notes = await store_notes.summaries(conn, [
                (t.participant, t.trade_id) for t in trades
                if query.participant in (None, t.participant)])
        counts["overdue"] = min(sum(g.open for g, _ in overdue), COUNT_BOUND)
        rows = [aged(t, deciding.for_trade(t.participant, t.counterparty, t.product), now)
                for t in trades]
        upcoming = [at for _, at in due if at >= now]
        return Exceptions(rows, counts, now, min(upcoming, default=None), notes)

    async def aged(self, trade: Trade) -> tuple[AgedTrade, datetime]:
        """A trade with its cut-off and whether it is overdue now, and that now."""
        now = self.clock()
        async with database.connection(self.pool) as conn:
            found = await age_trades(conn, [trade], now, None)
        return found[0], now


def _session(found: store.StoredSession) -> Session:
    return Session(found.participant, found.csrf_token, found.expires_at,
                   found.credential_hash, found.label)


__all__ = ["TABS", "COUNT_BOUND", "Exceptions", "ExceptionsQuery", "Session", "Workbench"]
