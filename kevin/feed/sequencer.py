"""The feed sequencer: hands out the public ``seq`` after the writers committed.

Why (docs/design.md, the skipped feed row): a seq taken at insert time becomes visible at
commit time, so a reader tailing ``seq > last`` skips rows that committed late. Here
writers insert their feed rows with seq NULL and never wait for each other; this loop,
running in every ``kevin serve``, assigns seqs to committed rows in batches. The SQL and
its reasoning are in kevin.store.feed_queries.SEQUENCE_BATCH.

One process at a time leads: the one whose connection holds the sequencer's session
lock. The leader keeps that connection for as long as it leads and runs each round as
one autocommitted statement on it; it never hands the connection back to the pool (it
closes it), so the lock can never linger on a pooled connection. The others follow:
they try for the lead every ``poll_interval`` (a leader that dies loses the lock with its
session), and after their own commits they tell the leader over LISTEN/NOTIFY.

Wake-ups: every committed transaction() of this process pokes it (database.on_commit);
the leader also wakes on a follower's notification, and polls. A wake-up whose commits a
round already covered runs no round: a poke from before the last round was sent, or a
notification whose payload (a time on the server's clock by which the follower's
commits had finished) is older than the start of the last round on the server, whose
snapshot therefore held those commits. With two workers a follower's notification often
arrives after the leader's own commit ran the round that covered it; such a round
numbered nothing. Rows a round saw but could not number (behind a transaction still in
flight) wait for that transaction's commit, which wakes the leader too: another round
for the same commits would not number them either. A step of the server's clock can
make a wake-up look covered when it is not; those commits then wait for the next
wake-up or poll, never longer, and the seqs' order and completeness never depend on it.

A transaction nobody announces can hold rows back: anything on the server holding an
xid older than theirs (an ANALYZE, another application's writer). While a round leaves
rows waiting on one, the leader looks again every WAITING_RECHECK at the latest, however
long its poll, so that such rows go out soon after it ends, not at the next poll.

Work that one process at a time should do rides on the same lead (``while_leading``):
started when this process takes the lead, cancelled when it loses it — the overdue
scan (kevin.engine.chasers) is such work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import asyncpg
import structlog

from kevin.feed.watch import FeedWatch
from kevin.lifecycle import cancel_and_wait
from kevin.store import database
from kevin.store import feed as store
from kevin.store.feed_queries import WRITTEN_CHANNEL

log = structlog.get_logger(__name__)

WAITING_RECHECK = 0.1  # seconds


class Sequencer:
    def __init__(
        self, pool: asyncpg.Pool, watch: FeedWatch | None = None, *, batch: int = 5000,
        poll_interval: float = 0.1,
        while_leading: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
    ) -> None:
        self.pool = pool
        self.while_leading = list(while_leading)
        self.watch = watch
        self.batch = batch
        self.poll_interval = poll_interval
        self._poked = asyncio.Event()
        self.leading = False
        self.rounds = 0
        self.waiting = False  # the last round left rows waiting on a transaction
        self.skipped = 0  # wake-ups whose commits the last round had already covered
        # What wake-ups announce (commits finished before then), against what the last
        # round covered: time.monotonic() in this process; the server's clock (µs).
        self._poked_at = -1.0
        self._noted_at = -1
        self._sent_at = -1.0  # when the last finished round was sent
        self._started_at = -1  # when the server began it (Round.started)
        self._must = False  # a wake-up that needs a round whatever the above say

    def poke(self) -> None:
        """Commits of this process (or others' commits it learned of) finished before
        this call wait for a round."""
        self._poked_at = time.monotonic()
        self._poked.set()

    async def run(self) -> None:
        """Sequence (or follow) until cancelled. Never raises on database trouble: logs,
        backs off, retries (a server must not die because its database blinked)."""
        remove_hook = database.on_commit(self.pool, self.poke)
        backoff = 0.1
        try:
            while True:
                try:
                    async with database.connection(self.pool) as conn:
                        if await store.take_lead(conn):
                            try:
                                await self._lead(conn)
                            finally:
                                # The session lock goes with the session: never back
                                # into the pool with it.
                                database.terminate(conn)
                    await self._follow()
                    backoff = 0.1
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("feed sequencer: round failed, retrying", error=repr(e),
                                retry_in=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            remove_hook()

    async def _lead(self, conn: asyncpg.Connection) -> None:
        log.info("feed sequencer: leading")
        await store.name_leader(conn)
        self.leading = True
        await conn.add_listener(WRITTEN_CHANNEL, self._on_written)
        # A session killed under us: wake now, fail the next round, try again.
        conn.add_termination_listener(self._on_terminated)
        duties = [asyncio.create_task(work()) for work in self.while_leading]
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.drain(conn)
                deadline = loop.time() + (min(self.poll_interval, WAITING_RECHECK)
                                          if self.waiting else self.poll_interval)
                # Until a wake-up with commits no round covered yet, or the poll.
                while await self._wait(deadline - loop.time()) and not self._uncovered():
                    self.skipped += 1
        finally:
            self.leading = False
            await cancel_and_wait(duties)

    async def _follow(self) -> None:
        """Until the next try for the lead: pass this process's commits on to the leader,
        one notification for however many commits came together."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.poll_interval
        while (remaining := deadline - loop.time()) > 0:
            if await self._wait(remaining):
                async with database.connection(self.pool) as conn:
                    # Dated by the last commit, not by now: a round of the leader's that
                    # began meanwhile covered these commits already.
                    await store.tell_leader(conn, time.monotonic() - self._poked_at)

    def _on_written(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        """A follower's commits, finished before the server's clock read ``payload``."""
        try:
            self._noted_at = max(self._noted_at, int(payload))
        except ValueError:  # not a follower of this version: a round, whatever it says
            self._must = True
        self._poked.set()

    def _on_terminated(self, *_: object) -> None:
        self._must = True
        self._poked.set()

    def _uncovered(self) -> bool:
        """Whether a wake-up announced commits that finished after the last round began
        (or may have): those need a round."""
        return (self._must or self._poked_at >= self._sent_at
                or self._noted_at >= self._started_at)

    async def _wait(self, seconds: float) -> bool:
        """Until poked (True) or ``seconds`` passed (False); a poke is used up."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._poked.wait(), seconds)
        poked = self._poked.is_set()
        self._poked.clear()
        return poked

    async def drain(self, conn: asyncpg.Connection) -> int:
        """Sequence everything eligible now on the leading ``conn``; how many seqs were
        assigned."""
        assigned = 0
        while True:
            self._must = False
            sent = time.monotonic()
            result = await store.sequence_round(conn, self.batch)
            self._sent_at = sent
            if result.started is not None:
                self._started_at = result.started
            self.rounds += 1
            assigned += result.assigned
            self.waiting = result.waiting
            if result.top is not None and self.watch is not None:
                self.watch.advance(result.top)
            if result.assigned < self.batch:
                return assigned
