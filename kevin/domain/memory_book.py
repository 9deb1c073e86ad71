"""A book in memory: replays, what-if runs and tests run the live matcher over it.

Resting trades are kept per segment (kevin.domain.book.Segment) ordered by price, so a
candidate lookup walks outwards from the trade's price — O(log n) to find the place,
then only the trades ``decide`` must see. Mismatched trades are indexed by the trades
their lists name, as ix_trades_mismatch_targets does in PostgreSQL.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import datetime
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
)
from kevin.domain.models import Trade
from kevin.domain.rules import Rules
from kevin.domain.versions import NewVersion, written

RulesLookup = Callable[[Trade], RulesInForce]
# (participant, counterparty, trade_id named): the mismatched trades naming that trade.
Named = tuple[str, str, str]


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
        # (price, trade_id) of the resting trades of each segment.
        self._resting: dict[Segment, SortedList[tuple[Decimal, str]]] = {}
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
                self._resting[segment_of(old)].remove((old.price, old.trade_id))
            for named in _named(old):
                self._naming[named].discard(ref(old))
        self.trades[ref(trade)] = trade
        if trade.status in RESTING:
            segment = segment_of(trade)
            entries = self._resting.get(segment)
            if entries is None:
                entries = self._resting[segment] = SortedList()
            entries.add((trade.price, trade.trade_id))
        for named in _named(trade):
            self._naming[named].add(ref(trade))

    # --- what decide needs ---------------------------------------------------------------

    def counterparts(self, trade: Trade, rules: Rules) -> list[Trade]:
        """The resting counterparts ``decide`` needs: walking outwards from ``trade``'s
        price one price difference at a time (both sides at once), every counterpart up
        to the nearest difference at which one is within tolerance; or, when none is,
        every one within ``rules.price_bounds`` and at least the nearest MAX_MISMATCHES.
        Whole price differences are taken, so ties are all there for invariant 7."""
        return self.walk(trade, rules)[0]

    def walk(self, trade: Trade, rules: Rules) -> tuple[list[Trade], Decimal | None]:
        """``counterparts``, and how far from the trade's price the walk had to know the
        book to be sure of them: every resting trade priced within that distance (None:
        at any distance) was considered. A book holding only part of the trades
        (kevin.store.batch_book) checks that it holds that part."""
        entries = self._resting.get(opposite(trade))
        if not entries:
            return [], None
        price = trade.price
        low, high = rules.price_bounds(price)
        up = entries.bisect_left((price, ""))  # "": before every trade_id at this price
        down = up - 1
        chosen: list[Trade] = []
        outside = 0
        participant = trade.counterparty
        while up < len(entries) or down >= 0:
            up_price = entries[up][0] if up < len(entries) else None
            down_price = entries[down][0] if down >= 0 else None
            if up_price is None:
                distance = price - down_price  # type: ignore[operator]
            elif down_price is None:
                distance = up_price - price
            else:
                distance = min(up_price - price, price - down_price)
            take_up = up_price is not None and up_price - price == distance
            take_down = down_price is not None and price - down_price == distance
            within_bounds = ((take_up and (high is None or up_price <= high))  # type: ignore[operator]
                             or (take_down and (low is None or down_price >= low)))  # type: ignore[operator]
            if outside >= MAX_MISMATCHES and not within_bounds:
                return chosen, distance
            matched = False
            if take_up:
                while up < len(entries) and entries[up][0] == up_price:
                    matched = self._consider(trade, (participant, entries[up][1]), rules,
                                             chosen, matched) or matched
                    up += 1
            if take_down:
                while down >= 0 and entries[down][0] == down_price:
                    matched = self._consider(trade, (participant, entries[down][1]), rules,
                                             chosen, matched) or matched
                    down -= 1
            if matched:
                return chosen, distance
            outside = len(chosen)
        return chosen, None

    def _consider(self, trade: Trade, candidate_ref: TradeRef, rules: Rules,
                  chosen: list[Trade], matched: bool) -> bool:
        """Add the candidate unless its pair was broken; whether it is within tolerance
        (not tested once another at this distance is: the walk stops there anyway)."""
        if self.broken and frozenset((candidate_ref, ref(trade))) in self.broken:
            return False
        candidate = self.trades[candidate_ref]
        chosen.append(candidate)
        return not matched and not out_of_tolerance(trade, candidate, rules)

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


def _named(trade: Trade) -> list[Named]:
    if trade.status != "mismatched":
        return []
    return [(trade.participant, trade.counterparty, m.counterparty_trade_id)
            for m in trade.mismatches]
