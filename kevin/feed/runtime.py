"""The feed inside a server process: the watch, the sequencer, readers, SSE streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import structlog
from aiohttp import web

from kevin.domain.feed import AnyUpdate
from kevin.engine.ageing import Clock, system_clock
from kevin.engine.chasers import OverdueScanner
from kevin.feed.sequencer import Sequencer
from kevin.feed.watch import FeedWatch
from kevin.lifecycle import cancel_and_wait
from kevin.store import feed as store
from kevin.store.replica import Reads

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class FeedOptions:
    sequencer: bool = True  # run a sequencer in this process (safe in many at once)
    heartbeat: float = 15.0  # seconds of silence before an SSE comment line
    write_timeout: float = 30.0  # an SSE client that takes longer to accept a write is dropped
    batch: int = 200  # at most this many updates per SSE page
    page_bytes: int = 128 * 1024  # ...and about this many bytes of them: memory per stream
    client_check: float = 1.0  # seconds: how soon a quiet SSE stream notices its client left
    watch_poll: float = 0.5  # fallback poll of the feed head when NOTIFY is missed
    sequencer_poll: float = 0.1  # fallback poll for writes committed by other processes
    overdue_scan: float = 1.0  # seconds between overdue scans (in the leading process only)


@dataclass
class FeedRuntime:
    pool: asyncpg.Pool
    options: FeedOptions
    watch: FeedWatch
    sequencer: Sequencer | None
    scanner: OverdueScanner | None  # runs while this process leads the sequencer
    reads: Reads  # pages on a replica when one is configured
    active_streams: int = 0  # SSE streams open in this process (tests, metrics)

    async def page(self, after: int, participant: str | None, limit: int,
                   head: int | None = None) -> list[AnyUpdate]:
        """Up to ``limit`` updates with seq > ``after``, in seq order. ``head``: a seq the
        caller knows is sequenced (the watch's head); a page from a replica that comes back
        short of it is read again on the primary, so that a short page still means
        "nothing more up to the head" (docs/feed.md, reading from a standby)."""
        def short_of_head(updates: list[AnyUpdate]) -> bool:
            if head is None:
                return False
            last = updates[-1].seq if updates else after
            return len(updates) < limit and last < head

        return await self.reads.read(
            lambda conn, _: store.updates_after(conn, after, participant, limit),
            stale=short_of_head)


FEED = web.AppKey("feed", FeedRuntime)


def install_feed(app: web.Application, pool: asyncpg.Pool, options: FeedOptions,
                 reads: Reads | None = None, clock: Clock = system_clock) -> None:
    """The watch and the sequencer on the primary ``pool``, with the overdue scan riding
    on the sequencer's lead (``clock``: "now" for cut-offs); pages through ``reads``."""
    watch = FeedWatch(pool, options.watch_poll)
    sequencer = scanner = None
    if options.sequencer:
        sequencer = Sequencer(pool, watch, poll_interval=options.sequencer_poll)
        scanner = OverdueScanner(pool, clock, interval=options.overdue_scan,
                                 on_recorded=sequencer.poke)
        sequencer.while_leading.append(scanner.run)
    app[FEED] = FeedRuntime(pool, options, watch, sequencer, scanner, reads or Reads(pool))
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_close_streams)


async def _background(app: web.Application) -> AsyncIterator[None]:
    feed = app[FEED]
    feed.watch.closing = False
    tasks = [asyncio.create_task(feed.watch.run(), name="feed-watch")]
    if feed.sequencer is not None:
        tasks.append(asyncio.create_task(feed.sequencer.run(), name="feed-sequencer"))
    try:
        yield
    finally:
        await cancel_and_wait(tasks)


async def _close_streams(app: web.Application) -> None:
    """on_shutdown: every SSE stream ends cleanly (its loop sees `closing` and returns)."""
    app[FEED].watch.close()
