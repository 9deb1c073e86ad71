"""A book in memory: replays, what-if runs and tests run the live matcher over it.

Resting trades are kept per segment (kevin.domain.book.Segment) ordered by price, and
within a price by quantity, first submission and trade_id, so a candidate lookup visits
the segment in invariant 7's order (``in_order``): outwards from the trade's price and,
within a price, outwards from its quantity — O(log n) to find each place, then only the
trades ``decide`` must see, however many are tied at a price. Mismatched trades are
indexed by the trades their lists name, as ix_trades_mismatch_targets does in PostgreSQL.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

from sortedcontainers import SortedList

from kevin.domain.book import RulesInForce, Segment, opposite, segment_of
from kevin.domain.errors import VersionConflict
from kevin.domain.matching import (
    MAX_MISMATCHES,
    RESTING,
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
# A resting trade in its segment's order: (price, quantity, *tie_break).
Entry = tuple[Decimal, Decimal, datetime, str]
_BOTTOM, _TOP = Decimal("-Infinity"), Decimal("Infinity")
_FIRST, _LAST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


def _place(price: Decimal, quantity: Decimal = _BOTTOM, submitted: datetime = _FIRST) -> Entry:
    """Where the entries starting with these keys begin (a trade_id is never empty); with
    _TOP or _LAST, where those with the keys before it end."""
    return price, quantity, submitted, ""


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
        # The resting trades of each segment, as entries (``entry``).
        self._resting: dict[Segment, SortedList[Entry]] = {}
        self._naming: dict[Named, set[TradeRef]] = defaultdict(set)
        for trade in trades:
            self.put(trade)

    # --- keeping the indexes -----------------------------------------------------------

    def get(self, trade_ref: TradeRef) -> Trade | None:
        return self.trades.get(trade_ref)

    def put(self, trade: Trade) -> None:
        """Hold ``trade`` as the latest version of its trade."""
        old = self.trades.get(ref(trade))
        if old is not None:
            if old.status in RESTING:
                self._resting[segment_of(old)].remove(entry(old))
            for named in _named(old):
                self._naming[named].discard(ref(old))
        self.trades[ref(trade)] = trade
        if trade.status in RESTING:
            segment = segment_of(trade)
            entries = self._resting.get(segment)
            if entries is None:
                entries = self._resting[segment] = SortedList()
            entries.add(entry(trade))
        for named in _named(trade):
            self._naming[named].add(ref(trade))

    # --- what decide needs ---------------------------------------------------------------

    def counterparts(self, trade: Trade, rules: Rules) -> list[Trade]:
        """The resting counterparts ``decide`` needs, taken in invariant 7's order
        (``in_order``): up to the first within tolerance, which is the best; or, when
        none is, every one within ``rules.price_bounds`` and at least the nearest
        MAX_MISMATCHES. Pairs an operator broke are skipped."""
        return self.walk(trade, rules)[0]

    def walk(self, trade: Trade, rules: Rules) -> tuple[list[Trade], Decimal | None]:
        """``counterparts``, and how far from the trade's price the walk had to know the
        book to be sure of them: every resting trade priced within that distance (None:
        at any distance) must be held, for any of them might come before the last one
        taken. A book holding only part of the trades (kevin.store.batch_book) checks
        that it holds that part."""
        entries = self._resting.get(opposite(trade))
        if not entries:
            return [], None
        price = trade.price
        low, high = rules.price_bounds(price)
        chosen: list[Trade] = []
        participant = trade.counterparty
        broken = self.broken
        for distance, found in in_order(entries, price, trade.quantity):
            if (len(chosen) >= MAX_MISMATCHES
                    and high is not None and EXACT.add(price, distance) > high
                    and low is not None and EXACT.subtract(price, distance) < low):
                return chosen, distance  # nothing from here on can match
            candidate_ref = (participant, found[3])
            if broken and frozenset((candidate_ref, ref(trade))) in broken:
                continue
            candidate = self.trades[candidate_ref]
            chosen.append(candidate)
            if not out_of_tolerance(trade, candidate, rules):
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
    return (trade.price, trade.quantity, *tie_break(trade))


def in_order(entries: SortedList[Entry], price: Decimal, quantity: Decimal
             ) -> Iterator[tuple[Decimal, Entry]]:
    """The entries of a segment in invariant 7's order for a trade of ``price`` and
    ``quantity`` (kevin.domain.matching.candidate_order), each with its distance from
    ``price``: price levels outwards from ``price`` (the two at one distance together),
    within them quantities outwards from ``quantity``, each run of equal price and
    quantity already in tie-break order. Lazy: each step costs a few bisections, so a
    caller that stops after k entries pays O(k + log n), not the size of a level."""
    up = entries.bisect_left(_place(price))
    down = up - 1
    while up < len(entries) or down >= 0:
        up_gap = EXACT.subtract(entries[up][0], price) if up < len(entries) else None
        down_gap = EXACT.subtract(price, entries[down][0]) if down >= 0 else None
        distance = min(gap for gap in (up_gap, down_gap) if gap is not None)
        levels = []  # (start, end) of the price levels at this distance
        if up_gap == distance:
            end = entries.bisect_left(_place(entries[up][0], _TOP))
            levels.append((up, end))
            up = end
        if down_gap == distance:
            start = entries.bisect_left(_place(entries[down][0]))
            levels.append((start, down + 1))
            down = start - 1
        for found in _by_quantity(entries, levels, quantity):
            yield distance, found


def _by_quantity(entries: SortedList[Entry], levels: list[tuple[int, int]],
                 quantity: Decimal) -> Iterator[Entry]:
    """The entries of one or two price levels (index ranges) by quantity difference, then
    tie-break: each level is two runs of quantity groups going away from ``quantity``
    (those at or above it upwards, those below it downwards)."""
    # Each run: [start, end, upwards]; the groups still to visit lie in [start, end).
    runs = []
    for start, end in levels:
        middle = entries.bisect_left(_place(entries[start][0], quantity))
        runs.append([middle, end, True])
        runs.append([start, middle, False])
    while True:
        heads = []  # (quantity difference, group start, group end, run)
        for run in runs:
            start, end, upwards = run
            if start >= end:
                continue
            if upwards:
                level_price, group_quantity = entries[start][0], entries[start][1]
                group_end = entries.bisect_left(_place(level_price, group_quantity, _LAST))
                heads.append((EXACT.subtract(group_quantity, quantity), start, group_end, run))
            else:
                level_price, group_quantity = entries[end - 1][0], entries[end - 1][1]
                group_start = entries.bisect_left(_place(level_price, group_quantity))
                heads.append((EXACT.subtract(quantity, group_quantity), group_start, end, run))
        if not heads:
            return
        nearest = min(head[0] for head in heads)
        groups = [head for head in heads if head[0] == nearest]
        for _, group_start, group_end, run in groups:
            if run[2]:
                run[0] = group_end
            else:
                run[1] = group_start
        if len(groups) == 1:
            yield from entries.islice(groups[0][1], groups[0][2])
        else:
            yield from heapq.merge(*(entries.islice(start, end) for _, start, end, _ in groups),
                                   key=lambda e: e[2:])


def _named(trade: Trade) -> list[Named]:
    if trade.status != "mismatched":
        return []
    return [(trade.participant, trade.counterparty, m.counterparty_trade_id)
            for m in trade.mismatches]
