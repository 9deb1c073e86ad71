"""The book of a batch: the in-memory book, filled from PostgreSQL as the matcher needs
it, its writes kept until the batch is done.

A batch matches thousands of lines in one transaction under the match-key locks of
every key involved, so nothing but the batch changes those keys until it commits. The
matcher then runs exactly as over the PostgreSQL book, but each read that the book
already holds is answered from memory, and what the matcher writes goes to the database
one statement per few thousand versions (kevin.store.bulk.write_versions), written
while the batch goes on matching (``write_behind``) and the rest at the end (``flush``).
A mismatch, whose re-evaluations ripple through the book, costs memory work, not round
trips.

What the book holds of a segment is tracked as closed price intervals known completely
(every resting trade of the segment priced within them is held). A candidate lookup
walks the memory (kevin.domain.memory_book) and learns how far from the price it had to
know the segment; until the intervals cover that, it loads the next window of the
segment from the database (bulk_queries, WINDOW_ABOVE/BELOW) and walks again. The
windows around every line's price are loaded for all lines at once, before the first is
matched (``prefetch``). Trades whose mismatch lists name a trade are loaded
from the database once per named trade; after that the memory's own index answers.

The batch's new trades are hidden from the matcher until their lines are reached
(``hide``, ``reveal``): a line must not meet a later line of the same batch earlier than
it would one by one. A bulk submission hides them before the book is loaded, then asks
the database, a few thousand lines at a time, each part before its lines are matched and
while the lines before it are, when each is first submitted (its clock) and which
trade_ids another writer created meanwhile (``unhide``: ``first_versions``). Version 1
of each new trade goes in with the versions matching writes after it, by the same
statement: a line that matches at once writes its version 1 superseded already, and
nothing flips it.

One statement is in flight at a time; the rows of the next write are built meanwhile
(``_build_ahead``), so that it goes the moment the connection is free.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections import defaultdict
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from kevin.domain.book import RulesInForce, Segment, choose_in_force, opposite, segment_of
from kevin.domain.matching import TradeRef, ref
from kevin.domain.memory_book import MemoryBook
from kevin.domain.models import Trade, trusted
from kevin.domain.profiles import ProfileVersion
from kevin.domain.rules import Rules, RulesVersion
from kevin.domain.versions import NewVersion
from kevin.store import bulk
from kevin.store import matching as match_store
from kevin.store import trades as store
from kevin.store.book import in_force

# Rows per window: enough that a lookup near a line's price rarely needs a second one.
WINDOW_SIZE = 6
# A segment asked for at this many prices or more is read whole between the lowest and
# the highest of them (one range scan and a window beyond each end, instead of two
# windows a price, each its own index probe) when it holds few resting trades there: at
# most DENSE_ROWS per price asked, about what the windows would have read.
DENSE_PRICES = 32
DENSE_ROWS = 2

# While a batch goes on matching, what it has written so far goes to the database as soon
# as this many versions are pending (``write_behind``): PostgreSQL writes them on its core
# while the matcher goes on on this one, instead of all of them after the last line.
WRITE_BEHIND = 2_000
# Lines matched between two yields to the event loop while a write is in flight: the
# loop sends what the socket did not take at once, and reads the answer.
YIELD_EVERY = 16
# A batch's new trades are asked for their first submission this many lines at a time
# (``first_versions``): each part while the lines before it are matched.
FIRST_VERSIONS = 2_000


INFINITY = Decimal("Infinity")
# A closed price interval, unbounded on a side as -/+ INFINITY.
Interval = tuple[Decimal, Decimal]


class BatchBook(MemoryBook):
    """See the module docstring. ``rules``: the latest rules of every product the batch
    touches (None: it has none); ``broken``: the broken pairs among its participants."""

    def __init__(self, conn: asyncpg.Connection, rules: Mapping[str, RulesVersion | None],
                 broken: Iterable[frozenset[TradeRef]],
                 profiles: Iterable[ProfileVersion] = ()) -> None:
        super().__init__(broken=broken)
        self.conn = conn
        self._in_force = {product: in_force(product, found) for product, found in rules.items()}
        self._profiles = list(profiles)  # every live profile naming the batch's participant
        self._chosen: dict[tuple[str, str, str], RulesInForce] = {}
        self._known: dict[Segment, list[Interval]] = {}
        self._naming_loaded: set[TradeRef] = set()
        # The trades ``hide`` was given, until their lines are reached.
        self._hidden: dict[TradeRef, Trade] = {}
        self._pending: list[NewVersion] = []
        # The next write of what matching wrote, its rows built while the statement in
        # flight is written (``_build_ahead``), sent as soon as the connection is free.
        self._next: bulk.Rows | None = None
        self._stored: dict[TradeRef, int] = {}  # each held trade's version in the database
        self.recorded: dict[bulk.VersionRef, datetime] = {}
        # The statement in flight on the connection (one at a time), and what to do with
        # its answer once it is awaited (``_written``).
        self._writing: asyncio.Future[Callable[[], None]] | None = None
        self._lines_since_yield = 0
        # The parts of the batch's new trades (``first_versions``), how many were sent to
        # be asked their first submissions, and those answered, by their place.
        self._firsts: list[Sequence[NewVersion]] = []
        self._firsts_sent = 0
        self._firsts_written: dict[int, dict[TradeRef, datetime]] = {}

    async def _connection(self) -> asyncpg.Connection:
        """The connection, once the write in flight (``write_behind``) is done: it runs
        one statement at a time."""
        if self._writing is not None:
            await self._written()
        return self.conn

    async def rules_in_force(self, trade: Trade) -> RulesInForce:
        """The pair's profile, else the product's rules (choose_in_force), chosen once
        per pair and product. (Overridden, not handed to MemoryBook as its lookup: the
        book holding its own bound method would be a reference cycle, all its trades
        left for the cyclic collector instead of freed when the batch ends.)"""
        claim = (trade.participant, trade.counterparty, trade.product)
        found = self._chosen.get(claim)
        if found is None:
            found = self._chosen[claim] = choose_in_force(trade, self._profiles,
                                                          self._in_force[trade.product])
        return found

    # --- the batch's own trades --------------------------------------------------------

    def hide(self, trades: Iterable[Trade]) -> None:
        """Trades written already but not yet submitted as far as matching is concerned."""
        for trade in trades:
            key = (trade.participant, trade.trade_id)
            self._hidden[key] = trade
            self._stored[key] = trade.version

    def unhide(self, trades: Iterable[TradeRef]) -> None:
        """Trades ``hide`` was given but that were not written after all."""
        for trade in trades:
            self._hidden.pop(trade, None)
            self._stored.pop(trade, None)

    def write_first(self, news: Iterable[NewVersion]) -> None:
        """Version 1 of trades ``hide`` was given, their first submissions set, none of
        them in the database: pending ahead of anything matching derives from them, with
        no stored version to flip (a group commit's, written at its ``flush``; a bulk
        submission's go the same way part by part, ``first_versions``)."""
        for new in news:
            self._stored[(new.participant, new.trade_id)] = 0
            self._pending.append(new)

    def reveal(self, trade: Trade) -> None:
        """The line of ``trade`` is reached: it joins the book. A new trade_id is named in
        no mismatch list. It arrives (MemoryBook.arrive): placed among the resting trades
        only when the book is next asked for more than its own walk, since most lines
        that find a counterpart match at once and would leave their place again."""
        key = (trade.participant, trade.trade_id)
        self._hidden.pop(key, None)
        self._naming_loaded.add(key)
        self.arrive(trade)

    def _hold(self, rows: Iterable[asyncpg.Record]) -> list[Trade]:
        """Rows read from the database, held unless the book has the trade already (its
        own version is then the newer) or it is hidden."""
        held = []
        for row in rows:
            key = (row["participant"], row["trade_id"])
            if key in self.trades or key in self._hidden:
                continue
            trade = store.trade_from_row(row)
            self.put(trade)
            self._stored[key] = trade.version
            held.append(trade)
        return held

    # --- segments known by price --------------------------------------------------------

    def _gaps(self, segment: Segment, price: Decimal, reach: Decimal | None
              ) -> tuple[list[tuple[Segment, Decimal, bool]], list[tuple[Segment, Decimal, bool]]]:
        """The windows to load (above, below) so that the segment is known within
        ``reach`` of ``price`` (None: at any distance); none when it is already."""
        low = -INFINITY if reach is None else price - reach
        high = INFINITY if reach is None else price + reach
        interval = self._interval(segment, price)
        if interval is not None:
            start, end = interval
            above = [(segment, end, False)] if end < high else []
            below = [(segment, start, False)] if start > low else []
            return above, below
        return [(segment, price, True)], [(segment, price, False)]

    def _learn(self, segment: Segment, intervals: Iterable[Interval]) -> None:
        merged: list[Interval] = []
        for start, end in sorted([*self._known.get(segment, ()), *intervals]):
            if merged and merged[-1][1] >= start:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        self._known[segment] = merged

    def _interval(self, segment: Segment, price: Decimal) -> Interval | None:
        """The interval of ``segment`` known completely that holds ``price``, if any."""
        known = self._known.get(segment)
        if not known:
            return None
        at = bisect.bisect_right(known, (price, INFINITY)) - 1  # the last starting <= price
        return known[at] if at >= 0 and known[at][1] >= price else None

    async def _spans(self, asked: Sequence[tuple[Segment, Decimal]]
                     ) -> list[tuple[Segment, Decimal, Decimal]]:
        """The segments worth reading whole between the lowest and the highest price
        ``asked`` (DENSE_PRICES, DENSE_ROWS), each price asked for in two windows (one
        above it, one below), which is what the two constants count."""
        prices: dict[Segment, list[Decimal]] = defaultdict(list)
        for segment, price in asked:
            prices[segment].append(price)
        many = [(segment, min(at), max(at)) for segment, at in prices.items()
                if 2 * len(at) >= DENSE_PRICES]
        if not many:
            return []
        caps = [DENSE_ROWS * 2 * len(prices[segment]) + 1 for segment, _, _ in many]
        counts = await bulk.resting_counts(await self._connection(), many, caps)
        return [span for span, count, cap in zip(many, counts, caps, strict=True)
                if count < cap]

    async def _load(self, above: Sequence[tuple[Segment, Decimal, bool]],
                    below: Sequence[tuple[Segment, Decimal, bool]],
                    spans: Sequence[tuple[Segment, Decimal, Decimal]] = ()) -> list[Trade]:
        requests = [(*a, True) for a in above] + [(*b, False) for b in below]
        edges, rows = await bulk.windows(await self._connection(), requests, WINDOW_SIZE,
                                         spans)
        held = self._hold(rows)
        learnt: dict[Segment, list[Interval]] = defaultdict(list)
        for segment, low, high in spans:
            learnt[segment].append((low, high))
        for (segment, price, _, is_above), edge in zip(requests, edges, strict=True):
            learnt[segment].append((price, INFINITY if edge is None else edge) if is_above
                                   else (-INFINITY if edge is None else edge, price))
        for segment, intervals in learnt.items():
            self._learn(segment, intervals)
        return held

    async def _load_around(self, trades: Sequence[Trade],
                           segment: Callable[[Trade], Segment]) -> list[Trade]:
        """Loads each trade's ``segment`` at its price where the book does not know it
        yet: the windows either side of the price, or, for a segment worth reading whole
        (``_spans``), the span of the prices asked and one window beyond each end."""
        asked = []  # (segment, price) not known yet, in the trades' order
        for trade in trades:
            at = segment(trade)
            if self._interval(at, trade.price) is None:
                asked.append((at, trade.price))
        spans = await self._spans(asked)
        if spans:
            dense = {at for at, _, _ in spans}
            asked = [(at, price) for at, price in asked if at not in dense]
        above = [(at, price, True) for at, price in asked]
        below = [(at, price, False) for at, price in asked]
        above += [(at, high, False) for at, _, high in spans]
        below += [(at, low, False) for at, low, _ in spans]
        return await self._load(above, below, spans)

    # --- the Book protocol ----------------------------------------------------------------

    async def latest(self, trade: TradeRef) -> Trade | None:
        if trade in self.trades:
            return self.trades[trade]
        if trade in self._hidden:
            return None
        found = await store.latest(await self._connection(), *trade)
        if found is not None:
            self.put(found)
            self._stored[trade] = found.version
        return found

    async def candidates(self, trade: Trade, rules: Rules) -> list[Trade]:
        while True:
            chosen, reach = self.walk(trade, rules)
            above, below = self._gaps(opposite(trade), trade.price, reach)
            if not above and not below:
                return chosen
            await self._load(above, below)

    async def candidates_many(self, trades: Sequence[tuple[Trade, Rules]]
                              ) -> list[list[Trade]]:
        """``prefetch``, then each trade's candidates answered from memory."""
        await self.prefetch([trade for trade, _ in trades])
        return [await self.candidates(trade, rules) for trade, rules in trades]

    async def prefetch(self, trades: Sequence[Trade], own_side: bool = True) -> None:
        """Loads the windows around every trade's price at once (kevin.store.bulk.windows:
        one statement for a few, two for more), and the trades naming what they found
        (one more). Where a trade has counterparts, and ``own_side``, the windows of its
        own side too (as many more): those counterparts meet
        them when a mismatch has them re-evaluated (a few trades that mostly match — a
        group commit's — leave them to be read if needed). A batch calls this, not
        candidates_many: each line's candidates are looked up again when the line is
        matched, so answering them here too would only walk the book twice."""
        self._place_arrived()  # asked below which segments rest anything
        held = await self._load_around(trades, opposite)
        if own_side:
            # A trade's walk finds counterparts whenever its opposite segment rests
            # anything not broken with it (the nearest are taken even out of tolerance):
            # asking the segment, not walking it, loads a few windows more at most, never
            # fewer.
            with_counterparts = [t for t in trades if self._resting.get(opposite(t))]
            held += await self._load_around(with_counterparts, segment_of)
        await self.naming(held)

    async def naming(self, trades: Sequence[Trade]) -> list[Trade]:
        unknown = [t for t in trades if ref(t) not in self._naming_loaded]
        if unknown:
            rows = await match_store.naming_rows(await self._connection(), unknown)
            self._hold(rows)
            self._naming_loaded.update(ref(t) for t in unknown)
        return [found for trade in trades for found in self.named_by(trade)]

    async def append_versions(self, versions: Sequence[NewVersion]) -> list[Trade]:
        written = [self.write(new) for new in versions]
        self._pending.extend(versions)
        return written

    async def record_broken_pair(self, first: Trade, second: Trade, match_id: UUID,
                                 comment: str | None) -> None:
        await match_store.record_broken_pair(await self._connection(), ref(first),
                                             ref(second), match_id, comment)
        self.broken.add(frozenset((ref(first), ref(second))))

    # --- writing -------------------------------------------------------------------------

    async def write_behind(self) -> None:
        """Between two lines of a batch: once WRITE_BEHIND versions are pending, write
        them (kevin.store.bulk.write_versions) while matching goes on — one write in
        flight at a time, every read of the book waiting for it first, the rows of the
        next one built meanwhile (``_build_ahead``). The versions reach the database in
        the order the matcher wrote them, each trade's last one of each write latest, as
        one write at the end would leave them."""
        if self._writing is not None:
            if not self._writing.done():
                self._build_ahead()
                # Matching outrunning the database waits once twice as many are unsent,
                # so that no write (the last one above all, which nothing overlaps)
                # grows large.
                if self._next is None or len(self._pending) < WRITE_BEHIND:
                    self._lines_since_yield += 1
                    if self._lines_since_yield >= YIELD_EVERY:
                        self._lines_since_yield = 0
                        await asyncio.sleep(0)
                    return
            await self._written()
        if self._firsts_sent < len(self._firsts):
            # The next part of the first versions goes first: its lines come next.
            self._send_first_versions()
        elif self._next is not None or len(self._pending) >= WRITE_BEHIND:
            self._send_next()
        else:
            return
        await asyncio.sleep(0)  # the statement is sent now

    def _build_ahead(self) -> None:
        """While a statement is in flight (sent already: PostgreSQL is writing it), build
        the rows of the next write of what matching wrote once WRITE_BEHIND versions are
        pending, so that it is sent the moment the connection is free, not after this
        process has built it with PostgreSQL idle. (A part of the first submissions is
        two columns a line: built when sent.)"""
        if self._next is None and len(self._pending) >= WRITE_BEHIND:
            self._next = self._next_write()

    def _start(self, statement: Awaitable[Any], apply: Callable[[Any], None]) -> None:
        """Send ``statement`` as the one in flight; ``apply`` gets its answer when it is
        awaited (``_written``), between two lines, never in the middle of one."""
        async def run() -> Callable[[], None]:
            answer = await statement
            return lambda: apply(answer)

        self._writing = asyncio.ensure_future(run())

    def _next_write(self) -> bulk.Rows:
        """The pending versions as the next write's rows, each flipping the version its
        trade has in the database once the writes before it are done."""
        versions, self._pending = self._pending, []
        rows = bulk.written_rows(versions, self._stored)
        self._stored.update(rows.latest)
        return rows

    def _send_next(self) -> None:
        """Send the next write (built ahead, or now from what is pending)."""
        rows, self._next = self._next, None
        if rows is None:
            rows = self._next_write()
        self._start(bulk.write_versions(self.conn, rows, {}), self._recorded)

    async def _written(self) -> None:
        """Wait for the statement in flight, and take in its answer."""
        assert self._writing is not None
        writing, self._writing = self._writing, None
        (await writing)()

    def _recorded(self, recorded: dict[bulk.VersionRef, datetime]) -> None:
        """The recorded_at the database chose for each version a write wrote. The trades
        held keep theirs (nothing in matching reads it) until ``as_recorded`` is asked
        for the few that are answered: rebuilding every trade written, as this did, was
        a Trade more for every trade a batch matched."""
        self.recorded.update(recorded)

    def as_recorded(self, trade: Trade) -> Trade:
        """``trade`` with the recorded_at the database gave its version, when this book
        wrote it (it is held with its predecessor's until then, ``UNWRITTEN`` for a
        version 1)."""
        at = self.recorded.get((trade.participant, trade.trade_id, trade.version))
        if at is None:
            return trade
        return trusted(Trade, {**trade.__dict__, "recorded_at": at})

    # --- the batch's first versions ---------------------------------------------------------

    async def first_versions(self, news: Sequence[NewVersion]
                             ) -> AsyncGenerator[Trade, None]:
        """Version 1 of each of ``news``, in order, as the trade the caller matches next,
        its first submission the database's clock (kevin.store.bulk.first_submissions,
        FIRST_VERSIONS at a time: a part is awaited only when its first line is reached,
        and the next one sent as soon as the connection is free, before any write of
        ``write_behind``): the trade ``hide`` was given for it (written from it with no
        first submission), with that first submission. One whose trade_id another writer
        created meanwhile is skipped and ``unhide``-n. Each yielded goes to the pending
        writes as it is yielded, ahead of what matching derives from it, with no stored
        version to flip: the write that takes it writes it superseded already when a
        later version of it comes in the same write. Another writer creating its
        trade_id before then makes that write fail on the trade's key (the caller does
        the batch again: kevin.engine.batch)."""
        self._firsts = [news[at:at + FIRST_VERSIONS]
                        for at in range(0, len(news), FIRST_VERSIONS)]
        self._firsts_sent = 0
        for index, part in enumerate(self._firsts):
            while index not in self._firsts_written:
                if self._writing is None:
                    self._send_first_versions()
                    await asyncio.sleep(0)  # the statement is sent now
                self._build_ahead()
                await self._written()
            written = self._firsts_written.pop(index)
            if self._writing is None and self._firsts_sent < len(self._firsts):
                self._send_first_versions()
                await asyncio.sleep(0)  # the statement is sent now
            refs = [(new.participant, new.trade_id) for new in part]
            self.unhide(key for key in refs if key not in written)
            for new in part:
                key = (new.participant, new.trade_id)
                first_submitted_at = written.get(key)
                if first_submitted_at is not None:
                    self._stored[key] = 0
                    self._pending.append(new.first_submitted(first_submitted_at))
                    # What ``written`` makes of that version, from the trade made of it
                    # before: its values are the same but for the first submission.
                    yield trusted(Trade, {**self._hidden[key].__dict__,
                                          "first_submitted_at": first_submitted_at})

    def _send_first_versions(self) -> None:
        index = self._firsts_sent
        self._firsts_sent += 1

        def apply(written: dict[TradeRef, datetime]) -> None:
            self._firsts_written[index] = written

        self._start(bulk.first_submissions(self.conn, self._firsts[index]), apply)

    async def abandon(self) -> None:
        """The batch failed: wait for the write in flight, whatever became of it, so that
        the connection is free for the rollback."""
        writing, self._writing = self._writing, None
        if writing is not None:
            with contextlib.suppress(Exception):
                await writing

    # --- the end of the batch -------------------------------------------------------------

    async def flush(self) -> None:
        """Write everything the matcher wrote and ``write_behind`` has not
        (kevin.store.bulk.write_versions), and give each trade it wrote the recorded_at
        the database chose (``recorded``: that of every version written, by
        (participant, trade_id, version))."""
        while True:
            if self._next is None and self._pending:
                self._next = self._next_write()  # built while the write in flight is written
            if self._writing is not None:
                await self._written()
            if self._next is None:
                return
            self._send_next()
