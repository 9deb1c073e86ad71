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
the leader also wakes on a follower's notification, and polls. A transaction nobody
announces can hold rows back: anything on the server holding an xid older than theirs
(an ANALYZE, another application's writer). While a round leaves rows waiting on one, the
leader looks again every WAITING_RECHECK at the latest, however long its poll, so that
such rows go out soon after it ends, not at the next poll.

Work that one process at a time should do rides on the same lead (``while_leading``):
started when this process takes the lead, cancelled when it loses it — the overdue
scan (kevin.engine.chasers) is such work.
"""

from __future__ import annotations

import asyncio
import contextlib
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

    def poke(self) -> None:
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
        self.leading = True
        await conn.add_listener(WRITTEN_CHANNEL, self._on_written)
        # A session killed under us: wake now, fail the next round, try again.
        conn.add_termination_listener(self._on_written)
        duties = [asyncio.create_task(work()) for work in self.while_leading]
        try:
            while True:
                await self.drain(conn)
                await self._wait(min(self.poll_interval, WAITING_RECHECK)
                                 if self.waiting else self.poll_interval)
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
                    await store.tell_leader(conn)

    def _on_written(self, *_: object) -> None:
        self.poke()

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
            result = await store.sequence_round(conn, self.batch)
            self.rounds += 1
            assigned += result.assigned
            self.waiting = result.waiting
            if result.top is not None and self.watch is not None:
                self.watch.advance(result.top)
            if result.assigned < self.batch:
                return assigned
