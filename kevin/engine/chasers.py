"""Chasers: a notice to the participant and the counterparty of each trade whose cut-off
passes while it is unmatched or mismatched (event ``overdue`` on the feed).

Exactly once, however many processes run and across restarts: the notice's unique key
(participant, trade_id, trade_date) decides (kevin.store.overdue.RECORD_NOTICES), and
its two feed updates are written in the same statement. The scan runs only in the
process that leads the feed sequencer (the advisory lock of kevin.feed.sequencer), so
normally one scanner works; during a hand-over two may overlap for a moment and the key
still lets only one notice through.

What a tick looks at, never every trade:

- the open trades of the trade dates whose cut-off passed since the previous tick (a
  cut-off grows with the trade date, so these are a few dates: kevin.domain.cutoffs
  .trade_dates_passing), through the partial index of open trades by trade date;
- the trade versions sequenced on the feed since the previous tick that are still open
  (a trade submitted late, re-opened or amended to an earlier date may be overdue at
  once), by seq;
- once when this process takes the lead, or when a cut-off of a profile or of product
  rules changes: every open trade up to the latest trade date whose cut-off passed, a
  batch per tick (the trades that became overdue while no one scanned), alongside the
  two above.

"Now" is the injectable clock the trade service reads, so tests move time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import date, datetime

import asyncpg
import structlog

from kevin.domain.cutoffs import (
    DecidingCutoffs,
    cutoff_at,
    is_overdue,
    trade_dates_passing,
)
from kevin.domain.profiles import Cutoff
from kevin.engine.ageing import Clock, system_clock
from kevin.store import database
from kevin.store import overdue as store
from kevin.store.cutoffs import live_cutoffs
from kevin.store.overdue import WALK_START, OpenTrade

log = structlog.get_logger(__name__)

WalkKey = tuple[date, str, str]


class OverdueScanner:
    def __init__(self, pool: asyncpg.Pool, clock: Clock = system_clock, *,
                 batch: int = 1000, interval: float = 1.0,
                 on_recorded: Callable[[], None] | None = None) -> None:
        self.pool = pool
        self.clock = clock
        self.batch = batch
        self.interval = interval
        self.on_recorded = on_recorded  # new feed rows to sequence: wake the sequencer
        self.recorded = 0  # notices this process recorded (each is two feed updates)
        self._cutoffs: DecidingCutoffs | None = None
        self._since: datetime | None = None  # the previous tick's "now"
        self._walk: WalkKey | None = None  # where the walk over every open trade is
        self._feed_seq = 0  # the feed is looked at up to here

    def restart(self) -> None:
        """Start over as a new leader: walk every open trade once, then go on by ticks."""
        self._cutoffs = None

    async def run(self) -> None:
        """Tick every ``interval`` until cancelled (while this process leads). Database
        trouble is logged and the next tick tries again."""
        self.restart()
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("overdue scan failed, retrying", error=repr(e))
                self.restart()
            await asyncio.sleep(self.interval)

    async def tick(self) -> int:
        """One scan at the clock's now; how many notices it recorded."""
        now = self.clock()
        recorded = 0
        async with database.connection(self.pool) as conn:
            cutoffs = await live_cutoffs(conn)
            if cutoffs != self._cutoffs:
                self._cutoffs = cutoffs
                self._walk = WALK_START
                self._since = now
                self._feed_seq = await store.max_seq(conn)
            if self._walk is not None:
                recorded += await self._walk_on(conn, cutoffs, now)
            # Alongside a walk, not after it: a long walk (many open trades) must not
            # hold back the trades whose cut-off passes meanwhile.
            recorded += await self._passed_since(conn, cutoffs, now)
            self._since = now
            recorded += await self._opened_on_feed(conn, cutoffs, now)
        if recorded:
            self.recorded += recorded
            log.info("overdue notices recorded", notices=recorded)
            if self.on_recorded is not None:
                self.on_recorded()
        return recorded

    async def _walk_on(self, conn: asyncpg.Connection, cutoffs: DecidingCutoffs,
                       now: datetime) -> int:
        """One batch of the walk over every open trade whose cut-off may have passed."""
        assert self._walk is not None
        latest = cutoffs.latest_trade_date_passed(now)
        if latest is None:
            self._walk = None
            return 0
        found = await store.open_until(conn, latest, self._walk, self.batch)
        self._walk = found[-1].key if len(found) == self.batch else None
        return await self._record(conn, found, cutoffs, now)

    async def _passed_since(self, conn: asyncpg.Connection, cutoffs: DecidingCutoffs,
                            now: datetime) -> int:
        """The open trades of the trade dates whose cut-off passed in [since, now)."""
        dates = sorted({d for c in cutoffs.in_force()
                        for d in trade_dates_passing(c, self._since, now)})
        recorded = 0
        after: WalkKey = WALK_START
        while dates:
            found = await store.open_on_dates(conn, dates, after, self.batch)
            recorded += await self._record(conn, found, cutoffs, now)
            if len(found) < self.batch:
                break
            after = found[-1].key
        return recorded

    async def _opened_on_feed(self, conn: asyncpg.Connection, cutoffs: DecidingCutoffs,
                              now: datetime) -> int:
        head = await store.max_seq(conn)
        recorded = 0
        while self._feed_seq < head:
            upto = min(head, self._feed_seq + self.batch)
            found = await store.opened_on_feed(conn, self._feed_seq, upto)
            recorded += await self._record(conn, found, cutoffs, now)
            self._feed_seq = upto
        return recorded

    async def _record(self, conn: asyncpg.Connection, found: Sequence[OpenTrade],
                      cutoffs: DecidingCutoffs, now: datetime) -> int:
        late = []
        instants: dict[tuple[Cutoff, date], datetime] = {}
        for trade in found:
            cutoff = cutoffs.for_trade(trade.participant, trade.counterparty, trade.product)
            if cutoff is None:
                continue
            at = instants.get((cutoff, trade.trade_date))
            if at is None:
                at = instants[(cutoff, trade.trade_date)] = cutoff_at(trade.trade_date, cutoff)
            if is_overdue(trade.status, at, now):
                late.append((trade, at))
        return await store.record_notices(conn, late)
