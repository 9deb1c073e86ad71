"""The feed sequencer: hands out the public ``seq`` after the writers committed.

Why (DESIGN.md, the skipped-feed-row bug): a seq taken at insert time becomes visible at
commit time, so a reader tailing ``seq > last`` skips rows that committed late. Here
writers insert their feed rows with seq NULL and never wait for each other; this loop,
running in every ``kevin serve`` but working in only one process at a time (an advisory
lock), assigns seqs to committed rows in batches. The SQL and its reasoning are in
kevin.store.feed_queries.SEQUENCE_BATCH.

Wake-ups: every committed transaction() of this process pokes it (database.on_commit);
a short poll covers writers in other processes. A round that loses the lock to another
process retries shortly, since that process's round may have started before our commit.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog

from kevin.feed.watch import FeedWatch
from kevin.store import database
from kevin.store import feed as store

log = structlog.get_logger(__name__)


class Sequencer:
    def __init__(
        self, pool: asyncpg.Pool, watch: FeedWatch | None = None, *, batch: int = 5000,
        poll_interval: float = 0.1, lock_retry: float = 0.01,
    ) -> None:
        self.pool = pool
        self.watch = watch
        self.batch = batch
        self.poll_interval = poll_interval
        self.lock_retry = lock_retry
        self._poked = asyncio.Event()
        self.rounds = 0

    def poke(self) -> None:
        self._poked.set()

    async def run(self) -> None:
        """Sequence until cancelled. Never raises on database trouble: logs, backs off,
        retries (a server must not die because its database blinked)."""
        remove_hook = database.on_commit(self.pool, self.poke)
        backoff = 0.1
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poked.wait(), self.poll_interval)
                self._poked.clear()
                try:
                    await self.drain()
                    backoff = 0.1
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("feed sequencer: round failed, retrying", error=repr(e),
                                retry_in=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    self._poked.set()
        finally:
            remove_hook()

    async def drain(self) -> int:
        """Sequence everything eligible now; returns how many seqs were assigned."""
        assigned = 0
        async with database.connection(self.pool) as conn:
            if not await store.any_unsequenced(conn):
                return 0
            while True:
                result = await store.sequence_round(conn, self.batch)
                self.rounds += 1
                if not result.locked:
                    # Another process is sequencing; its snapshot may predate our commit.
                    await asyncio.sleep(self.lock_retry)
                    self._poked.set()
                    return assigned
                assigned += result.assigned
                if result.top is not None and self.watch is not None:
                    self.watch.advance(result.top)
                if result.assigned < self.batch:
                    return assigned
