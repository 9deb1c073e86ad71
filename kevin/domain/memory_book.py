"""A book in memory: replays, what-if runs and tests run the live matcher over it.

Resting trades are kept per segment (kevin.domain.book.Segment) by price level — the
levels' prices in order, each level's trades ordered by quantity, first submission and
trade_id — so a candidate lookup visits the segment in invariant 7's order
(``in_order``): outwards from the trade's price and, within a price, outwards from its
quantity — O(log n) to find each place, then only the trades ``decide`` must see, however
many are tied at a price. Mismatched trades are indexed by the trades their lists name,
as ix_trades_mismatch_targets does in PostgreSQL.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sortedcontainers import SortedList

from kevin.domain.book import RulesInForce, Segment, opposite, segment_of
from kevin.domain.errors import VersionConflict
from kevin.domain.matching import (
    MAX_MISMATCHES,
    RESTING,
    Candidates,
    TradeRef,
    out_of_tolerance,
    ref,
    tie_break,
)
from kevin.domain.models import Trade
from kevin.domain.rules import EXACT, Rules
from kevin.domain.versions import NewVersion, written

RulesLookup = Callable[[Trade], RulesInForce]
# (participant, counterparty, trade_id named): the mismatched trades naming that trade.
Named = tuple[str, str, str]
# A resting trade in its price level's order: (quantity, *tie_break).
Entry = tuple[Decimal, datetime, str]
_FIRST, _LAST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


def _place(quantity: Decimal, submitted: datetime = _FIRST) -> Entry:
    """Where a level's entries of ``quantity`` begin (a trade_id is never empty); with
    _LAST, where they end."""
    return quantity, submitted, ""


class Resting:
    """The resting trades of one segment: the prices of its levels in order, and each
    level's entries (``entry``) in order. False when empty.

    The prices are a SortedList (a segment may hold a level per trade: prices with many
    decimals). Each level is a plain list kept sorted with ``bisect``: a level holds the
    trades at one price of one segment, a handful in real books (a few hundred in the
    benchmark's), where a list's memmove costs less than SortedList's Python-level
    indexing, bisection and removal, which a walk and every placed or removed trade go
    through; only a level of tens of thousands of trades at one price would feel it."""

    __slots__ = ("levels", "prices")

    def __init__(self) -> None:
        self.prices: SortedList[Decimal] = SortedList()
        self.levels: dict[Decimal, list[Entry]] = {}

    def __len__(self) -> int:
        return len(self.levels)

    def add(self, trade: Trade) -> None:
        level = self.levels.get(trade.price)
        if level is None:
            self.levels[trade.price] = [entry(trade)]
            self.prices.add(trade.price)
            return
        insort(level, entry(trade))

    def remove(self, trade: Trade) -> None:
        level = self.levels[trade.price]
        held = entry(trade)
        at = bisect_left(level, held)
        if at == len(level) or level[at] != held:
            raise ValueError(f"{held} is not resting at {trade.price}")
        del level[at]
        if not level:
            del self.levels[trade.price]
            self.prices.remove(trade.price)


def exact_rules(trade: Trade) -> RulesInForce:
    return RulesInForce.exact(trade.product)


class MemoryBook:
    """The latest version of every trade it holds; see the module docstring.

    ``rules`` looks up the rules in force for a trade; ``now``, when set, is the
    recorded_at of the versions appended (a replay sets it to the event's instant; unset,
    a version keeps the one of the version it derives from).
    """

    def __init__(self, trades: Iterable[Trade] = (), *, rules: RulesLookup = exact_rules,
                 broken: Iterable[frozenset[TradeRef]] = ()) -> None:
        self.trades: dict[TradeRef, Trade] = {}
        self.rules = rules
        self.broken: set[frozenset[TradeRef]] = set(broken)
        self.now: datetime | None = None
        self._resting: dict[Segment, Resting] = {}
        self._naming: dict[Named, set[TradeRef]] = defaultdict(set)
        self._arrived: Trade | None = None  # held, not yet placed among the resting
        for trade in trades:
            self.put(trade)

    # --- keeping the indexes -----------------------------------------------------------

    def get(self, trade_ref: TradeRef) -> Trade | None:
        return self.trades.get(trade_ref)

    def arrive(self, trade: Trade) -> None:
        """``put`` for a new unmatched trade about to be matched (a replay's submission),
        placed among the resting trades only once the book is asked for more than its own
        walk: most trades match on arrival and would leave their place at once. Its walk
        does not need it there (a trade's counterparts rest in the opposite segment), and
        when its next version is put it is placed as new."""
        key = (trade.participant, trade.trade_id)
        if trade.status != "unmatched" or key in self.trades:
            self.put(trade)
            return
        self._place_arrived()
        self.trades[key] = trade
        self._arrived = trade

    def _place_arrived(self, next_version_of: TradeRef | None = None) -> None:
        arrived, self._arrived = self._arrived, None
        if arrived is None:
            return
        key = (arrived.participant, arrived.trade_id)
        held = self.trades.get(key)  # itself, or the same version as its writer recorded it
        if held is None or held.version != arrived.version:
            return
        del self.trades[key]  # put as new: as its next version, or here, as itself
        if key != next_version_of:
            self.put(held)

    def put(self, trade: Trade) -> None:
        """Hold ``trade`` as the latest version of its trade."""
        key = (trade.participant, trade.trade_id)
        if self._arrived is not None:
            self._place_arrived(key)
        old = self.trades.get(key)
        self.trades[key] = trade
        resting = trade.status in RESTING
        if old is not None:
            if old.status in RESTING:
                if resting and _same_place(old, trade):
                    resting = False  # its entry stands (a new mismatch list, say)
                else:
                    self._resting[segment_of(old)].remove(old)
            if old.status == "mismatched":
                for named in _named(old):
                    self._naming[named].discard(key)
        if resting:
            segment = segment_of(trade)
            found = self._resting.get(segment)
            if found is None:
                found = self._resting[segment] = Resting()
            found.add(trade)
        if trade.status == "mismatched":
            for named in _named(trade):
                self._naming[named].add(key)

    # --- what decide needs ---------------------------------------------------------------

    def counterparts(self, trade: Trade, rules: Rules) -> Candidates:
        """The resting counterparts ``decide`` needs, taken in invariant 7's order
        (``in_order``): up to the first within tolerance, which is the best; or, when
        none is, every one within ``rules.price_bounds`` and at least the nearest
        MAX_MISMATCHES. Pairs an operator broke are skipped. Each was tested on the way:
        the verdicts go with them (``Candidates``)."""
        return self.walk(trade, rules)[0]

    def walk(self, trade: Trade, rules: Rules) -> tuple[Candidates, Decimal | None]:
        """``counterparts``, and how far from the trade's price the walk had to know the
        book to be sure of them: every resting trade priced within that distance (None:
        at any distance) must be held, for any of them might come before the last one
        taken. A book holding only part of the trades (kevin.store.batch_book) checks
        that it holds that part."""
        if self._arrived is not None and self._arrived is not trade:
            self._place_arrived()
        chosen = Candidates()
        resting = self._resting.get(opposite(trade))
        if not resting:
            return chosen, None
        price = trade.price
        bounds: tuple[Decimal | None, Decimal | None] | None = None  # asked when needed
        failing = chosen.failing
        participant = trade.counterparty
        broken = self.broken
        for distance, found in in_order(resting, price, trade.quantity):
            if len(chosen) >= MAX_MISMATCHES:
                if bounds is None:
                    bounds = rules.price_bounds(price)
                low, high = bounds
                if (high is not None and EXACT.add(price, distance) > high
                        and low is not None and EXACT.subtract(price, distance) < low):
                    return chosen, distance  # nothing from here on can match
            candidate_ref = (participant, found[2])
            if broken and frozenset((candidate_ref, ref(trade))) in broken:
                continue
            candidate = self.trades[candidate_ref]
            chosen.append(candidate)
            fields = failing[candidate_ref] = out_of_tolerance(trade, candidate, rules)
            if not fields:
                return chosen, distance
        return chosen, None

    def named_by(self, trade: Trade) -> list[Trade]:
        """Mismatched trades of ``trade``'s counterparty naming it, by trade_id."""
        refs = self._naming.get((trade.counterparty, trade.participant, trade.trade_id))
        return [self.trades[r] for r in sorted(refs)] if refs else []

    def write(self, new: NewVersion) -> Trade:
        """Version n+1 against version n (invariant 3), held at once."""
        current = self.trades.get((new.participant, new.trade_id))
        if current is None or current.version != new.version - 1:
            raise VersionConflict(current.version if current else 0, new.version - 1)
        trade = written(new, current.first_submitted_at, self.now or current.recorded_at)
        self.put(trade)
        return trade

    # --- the Book protocol ---------------------------------------------------------------

    async def latest(self, trade: TradeRef) -> Trade | None:
        return self.trades.get(trade)

    async def rules_in_force(self, trade: Trade) -> RulesInForce:
        return self.rules(trade)

    async def candidates(self, trade: Trade, rules: Rules) -> list[Trade]:
        return self.counterparts(trade, rules)

    async def candidates_many(self, trades: Sequence[tuple[Trade, Rules]]
                              ) -> list[list[Trade]]:
        return [self.counterparts(trade, rules) for trade, rules in trades]

    async def naming(self, trades: Sequence[Trade]) -> list[Trade]:
        return [found for trade in trades for found in self.named_by(trade)]

    async def append_versions(self, versions: Sequence[NewVersion]) -> list[Trade]:
        return [self.write(new) for new in versions]

    async def record_broken_pair(self, first: Trade, second: Trade, match_id: UUID,
                                 comment: str | None) -> None:
        self.broken.add(frozenset((ref(first), ref(second))))

    def evaluation(self) -> AbstractAsyncContextManager[None]:
        return nullcontext()

    @property
    def undoes_evaluations(self) -> bool:
        return False  # nobody else writes to it: an evaluation cannot lose a race


def entry(trade: Trade) -> Entry:
    return (trade.quantity, *tie_break(trade))


def in_order(resting: Resting, price: Decimal, quantity: Decimal
             ) -> Iterator[tuple[Decimal, Entry]]:
    """The entries of a segment in invariant 7's order for a trade of ``price`` and
    ``quantity`` (kevin.domain.matching.candidate_order), each with its distance from
    ``price``: price levels outwards from ``price`` (the two at one distance together),
    within them quantities outwards from ``quantity``, each run of equal quantity already
    in tie-break order. Lazy: each step costs a few bisections, so a caller that stops
    after k entries pays O(k + log n), not the size of a level."""
    prices, levels = resting.prices, resting.levels
    up = prices.bisect_left(price)
    down = up - 1
    count = len(prices)
    # Each price read once (SortedList's indexing is a Python call).
    up_price = prices[up] if up < count else None
    down_price = prices[down] if down >= 0 else None
    while up_price is not None or down_price is not None:
        # (Tested for None first: a Decimal compared with None asks numbers' ABCs.)
        up_gap = EXACT.subtract(up_price, price) if up_price is not None else None
        down_gap = EXACT.subtract(price, down_price) if down_price is not None else None
        if up_gap is None or (down_gap is not None and down_gap < up_gap):
            assert down_gap is not None
            distance = down_gap
        else:
            distance = up_gap
        at = []  # the levels at this distance
        if up_gap is not None and up_gap == distance:
            at.append(levels[up_price])  # type: ignore[index]  # not None with its gap
            up += 1
            up_price = prices[up] if up < count else None
        if down_gap is not None and down_gap == distance:
            at.append(levels[down_price])  # type: ignore[index]
            down -= 1
            down_price = prices[down] if down >= 0 else None
        if len(at) == 1 and at[0][0][0] == at[0][-1][0]:
            # One level of one quantity (the usual case): its order is the tie-break's.
            for found in at[0]:
                yield distance, found
        else:
            for found in _by_quantity(at, quantity):
                yield distance, found


def _by_quantity(levels: list[list[Entry]], quantity: Decimal) -> Iterator[Entry]:
    """The entries of one or two price levels by quantity difference, then tie-break:
    each level is two runs of quantity groups going away from ``quantity`` (those at or
    above it upwards, those below it downwards)."""
    # Each run: [level, start, end, upwards]; the groups still to visit lie in [start, end).
    runs: list[list[Any]] = []
    for level in levels:
        middle = bisect_left(level, _place(quantity))
        runs.append([level, middle, len(level), True])
        runs.append([level, 0, middle, False])
    while True:
        heads = []  # (quantity difference, group start, group end, run)
        for run in runs:
            level, start, end, upwards = run
            if start >= end:
                continue
            if upwards:
                group_quantity = level[start][0]
                group_end = bisect_left(level, _place(group_quantity, _LAST), start, end)
                heads.append((EXACT.subtract(group_quantity, quantity), start, group_end, run))
            else:
                group_quantity = level[end - 1][0]
                group_start = bisect_left(level, _place(group_quantity), start, end)
                heads.append((EXACT.subtract(quantity, group_quantity), group_start, end, run))
        if not heads:
            return
        nearest = min(head[0] for head in heads)
        groups = [head for head in heads if head[0] == nearest]
        for _, group_start, group_end, run in groups:
            if run[3]:
                run[1] = group_end
            else:
                run[2] = group_start
        if len(groups) == 1:
            _, start, end, run = groups[0]
            yield from run[0][start:end]
        else:
            yield from heapq.merge(*(run[0][start:end] for _, start, end, run in groups),
                                   key=lambda e: e[1:])


def _same_place(old: Trade, new: Trade) -> bool:
    """Whether two versions of a trade rest in the same place: segment, price level and
    entry."""
    return (old.price == new.price and old.quantity == new.quantity
            and old.first_submitted_at == new.first_submitted_at
            and segment_of(old) == segment_of(new))


def _named(trade: Trade) -> list[Named]:
    if trade.status != "mismatched":
        return []
    return [(trade.participant, trade.counterparty, m.counterparty_trade_id)
            for m in trade.mismatches]
