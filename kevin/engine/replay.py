"""Replays: re-run matching from an instant under other rules, and show or apply the
difference.

The replay runs the live matcher itself — ``kevin.engine.matching.Matcher``, which decides
with the pure ``kevin.domain.matching.decide`` — over an in-memory book
(``kevin.domain.memory_book.MemoryBook``) instead of the database. So a replay
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
import itertools
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from kevin import heap
from kevin.domain.book import RulesInForce, choose_in_force
from kevin.domain.errors import CannotMatch, NotFound
from kevin.domain.matching import TradeRef, ref
from kevin.domain.memory_book import MemoryBook, RulesLookup, exact_rules
from kevin.domain.models import MatchRef, Trade
from kevin.domain.profiles import Profile, ProfileVersion
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
    profiles_at,
    rules_at,
    split_history,
)
from kevin.domain.rules import Rules
from kevin.domain.versions import DecidedBy
from kevin.engine.matching import Matcher
from kevin.store import database
from kevin.store import matching as match_store
from kevin.store import replay as replay_store
from kevin.store import trades as store
from kevin.store.matching import MatchKey

REPLAY_ACTOR = "replay"
# How often apply re-reads the scope to lock match keys that appeared meanwhile.
LOCK_ROUNDS = 5


def replay_rules(book: MemoryBook, rules: Mapping[str, Rules],
                 stored: RulesTimeline, profiles: Mapping[str, Profile] | None = None,
                 stored_profiles: Sequence[ProfileVersion] = ()) -> RulesLookup:
    """The rules in force during a replay, as live matching chooses them (pair +
    product, pair + *, product rules, exact): the replay's profiles for the pairs they
    name (replacing those pairs' stored ones), else the stored profiles in force at the
    instant of the event being replayed (``book.now``); the replay's rules for the
    products it names, else the stored rules in force then."""
    given = profiles or {}
    replayed = [ProfileVersion(name=name, version=0, recorded_at=_EPOCH, **p.model_dump())
                for name, p in given.items()]
    replayed_pairs = {p.pair for p in replayed}
    replayed_rules = {product: RulesInForce(given_rules, DecidedBy("replay", product, None))
                      for product, given_rules in rules.items()}

    def product_rules(trade: Trade) -> RulesInForce:
        product = trade.product
        if product in replayed_rules:
            return replayed_rules[product]
        assert book.now is not None
        found = rules_at(stored, product, book.now)
        if found is None or found[0] is None:
            return RulesInForce.exact(product)
        return RulesInForce.product_rules(product, found[0], found[1])

    def lookup(trade: Trade) -> RulesInForce:
        fallback = product_rules(trade)
        if replayed_pairs and tuple(sorted((trade.participant, trade.counterparty))
                                    ) in replayed_pairs:
            chosen = choose_in_force(trade, replayed, fallback)
            if chosen is fallback:
                return fallback
            return RulesInForce(chosen.rules, DecidedBy("replay", chosen.decided_by.name,
                                                        None))
        if not stored_profiles:
            return fallback
        assert book.now is not None
        return choose_in_force(trade, profiles_at(stored_profiles, book.now), fallback)

    return lookup


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def replay_ids() -> Callable[[], UUID]:
    """Match ids for a simulation's own matches: 1, 2, 3 … as UUIDs. They only tell the
    simulation's matches apart (a break finds its pair by them) and are never stored —
    a dry run shows none and an apply writes new ones (``_write``) — so a counter serves,
    without uuid4's system call per match; none equals a stored match's (random, version
    4) id that the starting book may hold."""
    count = itertools.count(1)
    return lambda: UUID(int=next(count))


def _matched_with(a: Trade | None, b: Trade | None) -> bool:
    return (a is not None and b is not None and a.status == b.status == "matched"
            and a.match is not None and b.match is not None
            and a.match.match_id == b.match.match_id)


async def simulate(history: History, rules: Mapping[str, Rules],
                   stored: RulesTimeline, profiles: Mapping[str, Profile] | None = None,
                   stored_profiles: Sequence[ProfileVersion] = ()) -> dict[TradeRef, Trade]:
    """Re-run matching over ``history`` under ``rules`` (``stored`` for other products);
    each trade's replayed state."""
    book = MemoryBook(history.book.values(), broken=history.broken_before)
    book.rules = replay_rules(book, rules, stored, profiles, stored_profiles)
    match_ids = replay_ids()
    try:
        for event in history.events:
            # One matcher per event, as live matching runs one per transaction (its safety
            # net counts evaluations per matcher); the book and its broken pairs carry over.
            matcher = Matcher(book, REPLAY_ACTOR, new_match_id=match_ids)
            book.now = event.at
            if isinstance(event, Submitted):
                book.arrive(event.trade)
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
                    book.broken.add(frozenset(event.legs))
    finally:
        # The lookup reads the book's clock, so book and lookup form a cycle: broken,
        # the book is freed as soon as its trades are, not at the collector's next pass.
        book.rules = exact_rules
    return book.trades


@dataclass(frozen=True)
class Plan:
    products: list[str]
    changes: list[tuple[Trade, Trade]]  # (current, replayed)


@dataclass(frozen=True)
class Loaded:
    """What a replay reads: its products, their stored rules, and their history."""

    products: list[str]
    stored_rules: RulesTimeline
    history: History
    stored_profiles: list[ProfileVersion]


async def _load(conn: asyncpg.Connection, since: datetime, rules: Mapping[str, Rules],
                profiles: Mapping[str, Profile] | None = None) -> Loaded:
    # Profiles may name "*": every product active since then is in scope.
    named = (sorted(rules) if rules and not profiles
             else await replay_store.active_products(conn, since))
    products = await replay_store.linked_products(conn, named)
    stored_rules = await replay_store.rules_history(conn, products)
    versions = await replay_store.history(conn, products)
    history = split_history(versions, since, await replay_store.broken_pairs(conn))
    return Loaded(products, stored_rules, history, await replay_store.profiles_history(conn))


async def _plan(loaded: Loaded, rules: Mapping[str, Rules],
                profiles: Mapping[str, Profile] | None = None) -> Plan:
    # The simulation is pure computation; in a worker thread (with its own event loop) a
    # long replay does not stall the requests this process is serving meanwhile.
    history = loaded.history
    replayed = await asyncio.to_thread(
        lambda: asyncio.run(simulate(history, rules, loaded.stored_rules, profiles,
                                     loaded.stored_profiles)))
    return Plan(loaded.products, changes(history, replayed))


def _keys(trades: Iterable[Trade]) -> set[MatchKey]:
    return {MatchKey.of(t.participant, t.terms()) for t in trades}


class Replayer:
    """``POST /v1/replays`` and ``kevin replay``: one transaction per replay."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def replay(self, since: datetime, rules: Mapping[str, Rules], *, apply: bool,
                     actor: str, profiles: Mapping[str, Profile] | None = None
                     ) -> ReplayResult:
        # A replay builds hundreds of thousands of objects (the history it reads, the
        # versions it writes) that live until it ends and form no reference cycles: the
        # cyclic collector can free none of them, yet each of its passes walks the young
        # ones, and at 100,000 trades those passes cost more than the replay itself
        # (docs/performance.md). It is paused for the replay (heap.collector_paused: with
        # any batch or replay running beside it); reference counting frees the rest as usual.
        with heap.collector_paused():
            return await self._replay(since, rules, apply=apply, actor=actor,
                                      profiles=profiles)

    async def _replay(self, since: datetime, rules: Mapping[str, Rules], *, apply: bool,
                      actor: str, profiles: Mapping[str, Profile] | None
                      ) -> ReplayResult:
        replay_id = uuid.uuid4()
        if not apply:
            # One snapshot for everything read: the current versions and the history
            # they are compared with cannot disagree. Nothing is written.
            async with database.connection(self.pool) as conn, conn.transaction(
                    isolation="repeatable_read", readonly=True):
                plan = await _plan(await _load(conn, since, rules, profiles), rules,
                                   profiles)
            # Kept as a record too (applied: false), so its replay_id can be fetched.
            async with database.transaction(self.pool) as conn:
                await replay_store.record(conn, replay_id, since, rules, profiles or {}, actor,
                                          False)
            return ReplayResult(
                replay_id=replay_id, since=since, applied=False, products=plan.products,
                changes=[ReplayChange(participant=c.participant, trade_id=c.trade_id,
                                      before=MatchState.of(c),
                                      after=MatchState.of(r, stored=False))
                         for c, r in plan.changes])
        async with database.transaction(self.pool) as conn:
            plan = await self._plan_locked(conn, since, rules, profiles)
            await replay_store.record(conn, replay_id, since, rules, profiles or {}, actor,
                                      True)
            written = await _write(conn, plan, replay_id, actor)
        return ReplayResult(
            replay_id=replay_id, since=since, applied=True, products=plan.products,
            changes=[ReplayChange(participant=c.participant, trade_id=c.trade_id,
                                  before=MatchState.of(c), after=MatchState.of(w))
                     for c, w in written])

    @staticmethod
    async def _plan_locked(conn: asyncpg.Connection, since: datetime,
                           rules: Mapping[str, Rules],
                           profiles: Mapping[str, Profile] | None = None) -> Plan:
        """Plan under the match-key locks of every trade in scope, as live matching
        takes them: nothing changes these trades until we commit. A trade may enter a new
        key while we lock, so re-read until the keys are all held, then simulate once."""
        held: set[MatchKey] = set()
        for _ in range(LOCK_ROUNDS):
            loaded = await _load(conn, since, rules, profiles)
            needed = _keys(loaded.history.latest_trades()) - held
            if not needed:
                return await _plan(loaded, rules, profiles)
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
