"""Server-Sent Events: one feed stream, from a durable position, with bounded memory.

Memory per stream is bounded by one batch of updates plus the transport's buffer: each
batch is written with ``await response.write()``, which waits while the socket's buffer is
above its high-water mark, and the next batch is read only after that. A client that
accepts nothing for ``write_timeout`` seconds is dropped (its connection aborted), so a
stalled client costs a bounded amount of memory for a bounded time.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from kevin import jsoncodec
from kevin.domain.errors import DatabaseUnavailable
from kevin.domain.feed import FeedUpdate
from kevin.feed.runtime import FeedRuntime

log = structlog.get_logger(__name__)

HEARTBEAT = b": heartbeat\n\n"


def encode(update: FeedUpdate) -> bytes:
    data = jsoncodec.dumps(update.body())  # one line: orjson never writes a newline
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (update.seq, update.event.encode(), data)


class ClientTooSlow(Exception):
    pass


async def _write(response: web.StreamResponse, data: bytes, seconds: float) -> None:
    try:
        await asyncio.wait_for(response.write(data), seconds)
    except TimeoutError:
        raise ClientTooSlow() from None


async def stream(
    request: web.Request, feed: FeedRuntime, after: int, participant: str | None
) -> web.StreamResponse:
    options, watch = feed.options, feed.watch
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # proxies: do not buffer the stream
    })
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    feed.active_streams += 1
    try:
        await _write(response, b"retry: 1000\n: connected\n\n", options.write_timeout)
        last_write = loop.time()
        while not watch.closing:
            # The head is read BEFORE the query: every seq up to it is committed, so the
            # query sees them all and, if the page is short, we may wait for a newer head.
            head = watch.head
            updates = await feed.page(after, participant, options.batch)
            if updates:
                await _write(response, b"".join(encode(u) for u in updates),
                             options.write_timeout)
                after = updates[-1].seq
                last_write = loop.time()
                if len(updates) == options.batch:
                    continue
            silence = options.heartbeat - (loop.time() - last_write)
            if silence <= 0:
                await _write(response, HEARTBEAT, options.write_timeout)
                last_write = loop.time()
                continue
            await watch.wait_beyond(max(head, 0), silence)
    except ClientTooSlow:
        log.info("feed: dropping a client that stopped reading", after=after)
        if request.transport is not None:
            request.transport.abort()
        return response
    except DatabaseUnavailable:
        # Headers are sent, so no 503 is possible: end the stream; the client resumes
        # with Last-Event-ID from where it got to.
        log.warning("feed: database unavailable, ending the stream", after=after)
    finally:
        feed.active_streams -= 1
    return response
