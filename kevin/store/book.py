"""The PostgreSQL book: what kevin.engine.matching.Matcher reads and writes inside one
transaction, as SQL (kevin.store.matching_queries, kevin.store.queries).

The caller holds the match-key locks of everything the matcher may touch, so what this
book has read stays true until the transaction ends: it keeps the latest version of
every trade it read or wrote and answers again from memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from kevin.domain.book import RulesInForce, choose_in_force
from kevin.domain.errors import VersionConflict
from kevin.domain.matching import TradeRef, ref
from kevin.domain.models import Trade
from kevin.domain.profiles import ProfileVersion
from kevin.domain.rules import Rules, RulesVersion
from kevin.domain.versions import NewVersion, written
from kevin.store import bulk
from kevin.store import matching as match_store
from kevin.store import profiles as profile_store
from kevin.store import trades as store

# What a new trade carries as recorded_at until it is written (a single submission's
# version 1 until its first write, a batch's or group's new trades until theirs):
# nothing reads it — each trade written gets the recorded_at the database chose.
UNWRITTEN = datetime.min.replace(tzinfo=UTC)


def _claim(trade: Trade) -> tuple[str, str, str]:
    first, second = sorted((trade.participant, trade.counterparty))
    return first, second, trade.product


def in_force(product: str, found: RulesVersion | None) -> RulesInForce:
    """A product's stored rules as the rules in force (exact when it has none)."""
    if found is None:
        return RulesInForce.exact(product)
    return RulesInForce.product_rules(product, found.version, found.rules())


class PostgresBook:
    """The book of one transaction (``conn``).

    ``rules``: rules the caller already read in this transaction, by product (None: the
    product has none), e.g. with the match-key lock (lock_match_key_and_rules).
    ``savepoints``: each evaluation runs in a savepoint, so one that loses a version race
    is undone and retried alone. Without (a new submission: two round trips fewer per
    evaluation), VersionConflict ends the transaction and the caller retries all of it.
    """

    def __init__(self, conn: asyncpg.Connection, *,
                 rules: Mapping[str, RulesVersion | None] | None = None,
                 savepoints: bool = True) -> None:
        self.conn = conn
        self.savepoints = savepoints
        self._rules = {product: in_force(product, found)
                       for product, found in (rules or {}).items()}
        # Per (pair of participants, sorted; product): the pair's profile in force for
        # that product (its own or its "*" one), None when it has none.
        self._profiles: dict[tuple[str, str, str], ProfileVersion | None] = {}
        self._latest: dict[TradeRef, Trade] = {}
        # A new trade's version 1, not yet in the database (write_first).
        self._first: NewVersion | None = None

    def write_first(self, first: NewVersion) -> Trade:
        """Version 1 of a new trade (its first submission read, its trade_id free), held
        back: it goes into the database with the first versions matching derives, in
        one statement (bulk.write_versions), or alone at ``flush``. So a submission's
        transaction takes its xid only once it writes (kevin.feed.sequencer numbers no
        feed row of a transaction newer than the oldest in flight). The new trade's own
        candidate search cannot find it (it looks at the other side); any other read
        that could writes it first. Only without savepoints: an evaluation undone would
        undo it. Returns the trade as the book holds it until written."""
        assert not self.savepoints and self._first is None
        self._first = first
        trade = written(first, first.first_submitted_at, UNWRITTEN)
        self._latest[ref(trade)] = trade
        return trade

    async def flush(self) -> None:
        """Write the held version 1 if nothing matching derived has taken it along."""
        if self._first is not None:
            await self.append_versions([])

    def know_profile(self, trade: Trade, profile: ProfileVersion | None) -> None:
        """The pair's profile in force for ``trade``'s product, read by the caller in
        this transaction (lock_match_key_and_rules)."""
        self._profiles[_claim(trade)] = profile

    def remember(self, trade: Trade) -> None:
        """``trade`` is the latest version of its trade (the caller just wrote it)."""
        self._latest[ref(trade)] = trade

    async def latest(self, trade: TradeRef) -> Trade | None:
        if trade not in self._latest:
            found = await store.latest(self.conn, *trade)
            if found is None:
                return None
            self._latest[trade] = found
        return self._latest[trade]

    async def rules_in_force(self, trade: Trade) -> RulesInForce:
        """The pair's profile for the product, else its ``*`` profile, else the
        product's rules, else exact (choose_in_force)."""
        claim = _claim(trade)
        if claim not in self._profiles:
            self._profiles[claim] = await profile_store.profile_for_trade(
                self.conn, trade.participant, trade.counterparty, trade.product)
        product = trade.product
        if product not in self._rules:
            self._rules[product] = in_force(
                product, await match_store.latest_rules(self.conn, product))
        profile = self._profiles[claim]
        return choose_in_force(trade, [profile] if profile else [], self._rules[product])

    async def candidates(self, trade: Trade, rules: Rules) -> list[Trade]:
        if self._first is not None and ref(trade) != ref(self._first):
            await self.flush()
        found = await match_store.find_candidates(self.conn, trade, rules)
        for candidate in found:  # fresh from the database, under our lock
            self._latest[ref(candidate)] = candidate
        return found

    async def candidates_many(self, trades: Sequence[tuple[Trade, Rules]]
                              ) -> list[list[Trade]]:
        await self.flush()
        found = await match_store.find_candidates_many(self.conn, trades)
        for candidates in found:
            for candidate in candidates:
                self._latest[ref(candidate)] = candidate
        return found

    async def naming(self, trades: Sequence[Trade]) -> list[Trade]:
        await self.flush()
        found = await match_store.naming_any(self.conn, trades)
        for trade in found:
            self._latest.setdefault(ref(trade), trade)
        return found

    async def append_versions(self, versions: Sequence[NewVersion]) -> list[Trade]:
        if self._first is not None:
            return await self._append_with_first(versions)
        appended = await store.append_versions(self.conn, versions)
        for trade in appended:
            self._latest[ref(trade)] = trade
        return appended

    async def _append_with_first(self, versions: Sequence[NewVersion]) -> list[Trade]:
        """``versions`` after the held version 1, in one statement: each trade's
        earliest version written against the one before it (none for version 1). A
        trade_id another writer created meanwhile fails it on the trade's key."""
        assert self._first is not None
        every = [self._first, *versions]
        self._first = None
        stored = {ref(new): new.version - 1 for new in reversed(every)}
        recorded = await bulk.write_versions(self.conn, every, stored)
        trades = [written(new, new.first_submitted_at,
                          recorded[(new.participant, new.trade_id, new.version)])
                  for new in every]
        for trade in trades:  # in order: each trade's last version stays latest
            self._latest[ref(trade)] = trade
        return trades[1:]

    async def record_broken_pair(self, first: Trade, second: Trade, match_id: UUID,
                                 comment: str | None) -> None:
        await match_store.record_broken_pair(self.conn, ref(first), ref(second), match_id,
                                             comment)

    def evaluation(self) -> AbstractAsyncContextManager[None]:
        return self._savepoint()

    @asynccontextmanager
    async def _savepoint(self) -> AsyncIterator[None]:
        try:
            async with self.conn.transaction():
                yield
        except VersionConflict:
            self._latest.clear()  # what was read in the undone part may be gone
            raise

    @property
    def undoes_evaluations(self) -> bool:
        return self.savepoints
