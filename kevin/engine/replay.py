"""Replays: re-run matching from an instant under other rules, and show or apply the
difference.

The replay runs the live matcher itself — ``kevin.engine.matching.Matcher``, which decides
with the pure ``kevin.domain.matching.decide`` — over an in-memory book instead of the
database (``ReplayMatcher`` overrides only where the matcher reads or writes). So a replay
and live matching cannot disagree about what the same trades under the same rules give,
and replaying with the rules that were in force changes nothing.

A replay answers "what if these rules had been put in force at ``since``?" exactly as
Kevin would have: a rules change applies to matching from then on (it does not re-match
the resting book by itself), so the replay re-runs every matching step since then.

1. The book as it stood at ``since`` (kevin.domain.replay.split_history).
2. What people did afterwards, in the order they did it: submissions, amends, cancels,
   operator force and break (a force whose legs the replay has already matched
   otherwise, or a break of a pair the replay never matched, has nothing to act on),
   each matched under the given rules — or, for a product the request names no rules
   for, under the stored rules that were in force at that moment.
3. The outcome is compared with every trade's current version. A dry run returns the
   difference and writes nothing. Applying writes one version per changed trade
   (``reason: replayed``, carrying the replay's id) under the match-key locks live
   matching takes, and records the replay; history is never rewritten.

The products replayed are those named (or, with no rules given, every product with
activity since ``since``) and every product their trades can meet: a trade amended
into another product, or force-matched with a trade of another.
"""

from __future__ import annotations

import asyncio
import bisect
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from kevin.domain.errors import CannotMatch, NotFound, VersionConflict
from kevin.domain.matching import RESTING, TradeRef, ref
from kevin.domain.models import MatchRef, Reason, Trade
from kevin.domain.replay import (
    Amended,
    Broken,
    Cancelled,
    Forced,
    History,
    MatchState,
    ReplayChange,
    ReplayRecord,
    ReplayResult,
    RulesTimeline,
    Submitted,
    changes,
    rules_at,
    split_history,
)
from kevin.domain.rules import EXACT_RULES, Rules
from kevin.engine.matching import Matcher
from kevin.store import database
from kevin.store import matching as match_store
from kevin.store import replay as replay_store
from kevin.store import trades as store
from kevin.store.matching import MatchKey

REPLAY_ACTOR = "replay"
# How often apply re-reads the scope to lock match keys that appeared meanwhile.
LOCK_ROUNDS = 5

BookKey = tuple[str, str, str, str, str]  # product, currency, participant, counterparty, side


def _book_key(trade: Trade) -> BookKey:
    return trade.product, trade.currency, trade.participant, trade.counterparty, trade.side


class Book:
    """The latest version of every trade in a replay, with the two indexes live matching
    has in the database: resting trades by match key and side in price order (as
    ix_trades_resting), and mismatched trades by the trade their list names (as
    ix_trades_mismatch_targets)."""

    def __init__(self, trades: Iterable[Trade] = ()) -> None:
        self.trades: dict[TradeRef, Trade] = {}
        # (price, participant, trade_id) of resting trades, sorted, per key and side.
        self._resting: dict[BookKey, list[tuple[Decimal, str, str]]] = defaultdict(list)
        # (participant, counterparty, named trade_id) -> mismatched trades naming it.
        self._naming: dict[tuple[str, str, str], set[TradeRef]] = defaultdict(set)
        for trade in trades:
            self.put(trade)

    def get(self, trade_ref: TradeRef) -> Trade | None:
        return self.trades.get(trade_ref)

    def put(self, trade: Trade) -> None:
        old = self.trades.get(ref(trade))
        if old is not None:
            if old.status in RESTING:
                entries = self._resting[_book_key(old)]
                index = bisect.bisect_left(entries, (old.price, *ref(old)))
                assert entries[index] == (old.price, *ref(old)), "book index out of step"
                del entries[index]
            for named in _named(old):
                self._naming[named].discard(ref(old))
        self.trades[ref(trade)] = trade
        if trade.status in RESTING:
            bisect.insort(self._resting[_book_key(trade)], (trade.price, *ref(trade)))
        for named in _named(trade):
            self._naming[named].add(ref(trade))

    def naming(self, participant: str, counterparty: str, trade_id: str) -> list[Trade]:
        """Mismatched trades of ``participant`` with ``counterparty`` whose mismatch list
        names ``trade_id``, in trade_id order."""
        refs = self._naming.get((participant, counterparty, trade_id), ())
        return [self.trades[r] for r in sorted(refs)]

    def candidates(self, trade: Trade, rules: Rules,
                   eligible: Callable[[Trade], bool]) -> list[Trade]:
        """The resting counterparts ``decide`` needs to decide ``trade`` exactly as it
        would over all of them: every eligible one whose price can be within tolerance
        (``rules.price_bounds``, a superset), and on each side of the price the eligible
        ones at the three nearest price levels (the nearest three by invariant 7's order
        are among them, whichever they are)."""
        other_side = "buy" if trade.side == "sell" else "sell"
        entries = self._resting.get(
            (trade.product, trade.currency, trade.counterparty, trade.participant, other_side),
            [])
        chosen: dict[TradeRef, Trade] = {}

        def take(index: int) -> Trade | None:
            candidate = self.trades[(entries[index][1], entries[index][2])]
            if eligible(candidate):
                chosen[ref(candidate)] = candidate
                return candidate
            return None

        low, high = rules.price_bounds(trade.price)
        first = bisect.bisect_left(entries, (low,))
        for index in range(first, len(entries)):
            if high is not None and entries[index][0] > high:
                break
            take(index)
        middle = bisect.bisect_left(entries, (trade.price,))
        for indexes in (range(middle, len(entries)), range(middle - 1, -1, -1)):
            levels: list[Decimal] = []
            for index in indexes:
                price = entries[index][0]
                if len(levels) == 3 and price != levels[-1]:
                    break
                if take(index) is not None and (not levels or levels[-1] != price):
                    levels.append(price)
        return list(chosen.values())


def _named(trade: Trade) -> list[tuple[str, str, str]]:
    if trade.status != "mismatched":
        return []
    return [(trade.participant, trade.counterparty, m.counterparty_trade_id)
            for m in trade.mismatches]


class ReplayMatcher(Matcher):
    """The live matcher over an in-memory book: reads and writes go to the book, the
    rules are the replay's, and broken pairs are remembered in memory."""

    def __init__(self, book: Book, rules: Mapping[str, Rules], stored: RulesTimeline,
                 broken: set[frozenset[TradeRef]]) -> None:
        super().__init__(None, REPLAY_ACTOR)  # type: ignore[arg-type]  # no connection
        self.book = book
        self.replay_rules = dict(rules)
        self.stored_rules = stored
        # Shared, not copied: a pair broken during one event stays broken for the next.
        self.broken = broken
        self.now: datetime | None = None  # the instant of the event being replayed

    async def rules_for(self, product: str) -> tuple[int | None, Rules]:
        """The replay's rules for the product, else those stored and in force then."""
        if product in self.replay_rules:
            return None, self.replay_rules[product]
        assert self.now is not None
        return rules_at(self.stored_rules, product, self.now) or (None, EXACT_RULES)

    async def latest(self, trade_ref: TradeRef) -> Trade | None:
        return self.book.get(trade_ref)

    async def append(self, derived_from: Trade, *, status: str, reason: Reason,
                     **changes: Any) -> Trade:
        """As kevin.store.trades.append_version: version n+1 against version n, the terms
        carried over unless given, the match state stated anew."""
        current = self.book.get(ref(derived_from))
        if current is None or current.version != derived_from.version:
            raise VersionConflict(current.version if current else derived_from.version,
                                  derived_from.version)
        terms = changes.pop("terms", None) or derived_from.terms()
        written = Trade.model_validate({
            **terms.model_dump(), "trade_id": derived_from.trade_id,
            "participant": derived_from.participant, "version": derived_from.version + 1,
            "status": status, "reason": reason, "match": changes.pop("match", None),
            "mismatches": list(changes.pop("mismatches", ())),
            "comment": changes.pop("comment", None),
            "rules_version": changes.pop("rules_version", None),
            "replay_id": changes.pop("replay_id", None),
            "recorded_at": derived_from.recorded_at, "actor": self.actor,
            "first_submitted_at": derived_from.first_submitted_at,
        })
        if changes:
            raise TypeError(f"unexpected fields for a version: {sorted(changes)}")
        self.book.put(written)
        return written

    async def find_candidates(self, trade: Trade, rules: Rules) -> list[Trade]:
        """As kevin.store.matching.find_candidates: resting counterparts (``decide``
        checks the key fields and the trade date), never a pair an operator broke."""
        def eligible(candidate: Trade) -> bool:
            return (candidate.trade_date == trade.trade_date
                    and frozenset((ref(candidate), ref(trade))) not in self.broken)

        return self.book.candidates(trade, rules, eligible)

    async def pointing_at(self, trade: Trade) -> list[Trade]:
        """As kevin.store.matching.POINTING_AT: mismatched trades of the counterparty
        with this participant whose mismatch list names this trade."""
        return self.book.naming(trade.counterparty, trade.participant, trade.trade_id)

    async def pointing_at_all(self, trades: Sequence[Trade]) -> list[Trade]:
        return [found for trade in trades for found in await self.pointing_at(trade)]

    async def append_all(self, changes: Sequence[tuple[Trade, dict[str, Any]]]) -> list[Trade]:
        return [await self.append(derived_from, **fields) for derived_from, fields in changes]

    async def record_broken_pair(self, first: Trade, second: Trade, match_id: UUID,
                                 comment: str | None) -> None:
        self.broken.add(frozenset((ref(first), ref(second))))

    async def _evaluate_with_retry(self, trade_ref: TradeRef, primary: bool) -> None:
        await self._evaluate(trade_ref, primary)  # nobody else writes to this book


def _matched_with(a: Trade | None, b: Trade | None) -> bool:
    return (a is not None and b is not None and a.status == b.status == "matched"
            and a.match is not None and b.match is not None
            and a.match.match_id == b.match.match_id)


async def simulate(history: History, rules: Mapping[str, Rules],
                   stored: RulesTimeline) -> dict[TradeRef, Trade]:
    """Re-run matching over ``history`` under ``rules`` (``stored`` for other products);
    each trade's replayed state."""
    book = Book(history.book.values())
    broken = set(history.broken_before)
    for event in history.events:
        # One matcher per event, as live matching runs one per transaction (its safety
        # net counts evaluations per matcher); the book and broken pairs carry over.
        matcher = ReplayMatcher(book, rules, stored, broken)
        matcher.now = event.at
        if isinstance(event, Submitted):
            book.put(event.trade)
            await matcher.submitted(event.trade)
        elif isinstance(event, Amended | Cancelled):
            current = book.get(event.trade)
            if current is None or current.status == "cancelled":
                continue
            if isinstance(event, Amended):
                await matcher.amend(current, event.terms)
            else:
                await matcher.cancel(current)
        elif isinstance(event, Forced):
            first, second = (book.get(leg) for leg in event.legs)
            if first is None or second is None:
                continue
            try:
                await matcher.force(first, second, event.comment)
            except CannotMatch:
                pass  # the replay already matched a leg elsewhere (or it is cancelled)
        elif isinstance(event, Broken):
            first, second = (book.get(leg) for leg in event.legs)
            if _matched_with(first, second):
                assert first is not None and second is not None
                await matcher.break_match([first, second], event.comment)
            else:
                matcher.broken.add(frozenset(event.legs))
    return book.trades


@dataclass(frozen=True)
class Plan:
    products: list[str]
    changes: list[tuple[Trade, Trade]]  # (current, replayed)
    current: dict[TradeRef, Trade]


@dataclass(frozen=True)
class Loaded:
    """What a replay reads: its products, their stored rules, and their history."""

    products: list[str]
    stored_rules: RulesTimeline
    history: History


async def _load(conn: asyncpg.Connection, since: datetime,
                rules: Mapping[str, Rules]) -> Loaded:
    named = sorted(rules) if rules else await replay_store.active_products(conn, since)
    products = await replay_store.linked_products(conn, named)
    stored_rules = await replay_store.rules_history(conn, products)
    versions = await replay_store.history(conn, products)
    history = split_history(versions, since, await replay_store.broken_pairs(conn))
    return Loaded(products, stored_rules, history)


async def _plan(loaded: Loaded, rules: Mapping[str, Rules]) -> Plan:
    # The simulation is pure computation; in a worker thread (with its own event loop) a
    # long replay does not stall the requests this process is serving meanwhile.
    history = loaded.history
    replayed = await asyncio.to_thread(
        lambda: asyncio.run(simulate(history, rules, loaded.stored_rules)))
    return Plan(loaded.products, changes(history.latest, replayed), history.latest)


def _keys(trades: Iterable[Trade]) -> set[MatchKey]:
    return {MatchKey.of(t.participant, t.terms()) for t in trades}


class Replayer:
    """``POST /v1/replays`` and ``kevin replay``: one transaction per replay."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def replay(self, since: datetime, rules: Mapping[str, Rules], *, apply: bool,
                     actor: str) -> ReplayResult:
        replay_id = uuid.uuid4()
        if not apply:
            # One snapshot for everything read: the current versions and the history
            # they are compared with cannot disagree. Nothing is written.
            async with database.connection(self.pool) as conn, conn.transaction(
                    isolation="repeatable_read", readonly=True):
                plan = await _plan(await _load(conn, since, rules), rules)
            # Kept as a record too (applied: false), so its replay_id can be fetched.
            async with database.transaction(self.pool) as conn:
                await replay_store.record(conn, replay_id, since, dict(rules), actor, False)
            return ReplayResult(
                replay_id=replay_id, since=since, applied=False, products=plan.products,
                changes=[ReplayChange(participant=c.participant, trade_id=c.trade_id,
                                      before=MatchState.of(c),
                                      after=MatchState.of(r, stored=False))
                         for c, r in plan.changes])
        async with database.transaction(self.pool) as conn:
            plan = await self._plan_locked(conn, since, rules)
            await replay_store.record(conn, replay_id, since, dict(rules), actor, True)
            written = await _write(conn, plan, replay_id, actor)
        return ReplayResult(
            replay_id=replay_id, since=since, applied=True, products=plan.products,
            changes=[ReplayChange(participant=c.participant, trade_id=c.trade_id,
                                  before=MatchState.of(c), after=MatchState.of(w))
                     for c, w in written])

    @staticmethod
    async def _plan_locked(conn: asyncpg.Connection, since: datetime,
                           rules: Mapping[str, Rules]) -> Plan:
        """Plan under the match-key locks of every trade in scope, as live matching
        takes them: nothing changes these trades until we commit. A trade may enter a new
        key while we lock, so re-read until the keys are all held, then simulate once."""
        held: set[MatchKey] = set()
        for _ in range(LOCK_ROUNDS):
            loaded = await _load(conn, since, rules)
            needed = _keys(loaded.history.latest.values()) - held
            if not needed:
                return await _plan(loaded, rules)
            # Keys are taken in ascending lock-id order within a round; across rounds we
            # may take a lower id after a higher one, but only after re-reading, and live
            # writers hold at most the two keys of one trade, so waits stay short.
            await match_store.lock_match_keys(conn, needed)
            held |= needed
        raise RuntimeError("the trades of this replay kept moving to new match keys")

    async def record(self, replay_id: UUID) -> ReplayRecord:
        async with database.connection(self.pool) as conn:
            found = await replay_store.get(conn, replay_id)
        if found is None:
            raise NotFound(f"no replay {replay_id}")
        return found


async def _write(conn: asyncpg.Connection, plan: Plan, replay_id: UUID,
                 actor: str) -> list[tuple[Trade, Trade]]:
    """One ``replayed`` version per changed trade. Replayed pairs get a new match id;
    each side names the version the other is about to get."""
    changed = {ref(current): (current, replayed) for current, replayed in plan.changes}
    match_ids: dict[frozenset[TradeRef], UUID] = {}
    news = []
    for trade_ref in sorted(changed):
        current, replayed = changed[trade_ref]
        match = None
        if replayed.match is not None:
            partner_ref = (current.counterparty, replayed.match.counterparty_trade_id)
            partner = changed.get(partner_ref)
            if partner is None:  # a partner's state changes whenever ours does
                raise RuntimeError(f"replayed match of {trade_ref} with unchanged {partner_ref}")
            pair = frozenset((trade_ref, partner_ref))
            match = MatchRef(match_id=match_ids.setdefault(pair, uuid.uuid4()),
                             counterparty_trade_id=partner_ref[1],
                             counterparty_version=partner[0].version + 1)
        news.append(store.next_version(
            current, status=replayed.status, reason="replayed", actor=actor,
            match=match, mismatches=list(replayed.mismatches), replay_id=replay_id))
    # All in one statement, each against the version it derives from (invariant 3).
    written = await store.append_versions(conn, news, timeout=replay_store.STATEMENT_TIMEOUT)
    return [(changed[ref(w)][0], w) for w in written]
