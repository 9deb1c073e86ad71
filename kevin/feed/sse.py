"""Server-Sent Events: one feed stream, from a durable position, with bounded memory.

What one stream holds is bounded in bytes, whatever its client does:

- a page read from the database is about ``page_bytes`` of updates: pages start at one
  row and at most double from one to the next, up to ``batch`` rows, and shrink to fit
  the largest update the stream has seen;
- it is written in chunks of ``CHUNK`` bytes, each with ``await response.write()``, which
  waits while the transport's buffer is above its high-water mark; the next chunk (and the
  next page) waits for that. A client that reads slowly is sent updates at its own pace:
  its lag is a position in the database, not bytes in this process;
- a client that accepts nothing for ``write_timeout`` seconds is dropped (its connection
  aborted) and resumes with ``Last-Event-ID`` when it comes back.

A client that disconnects is noticed within ``client_check`` seconds even on a quiet
feed, and its stream ends as a client's doing (``CLIENT_CLOSED``: 499 in metrics and
logs), not as a server error.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from kevin import jsoncodec
from kevin.domain.errors import DatabaseUnavailable
from kevin.domain.feed import AnyUpdate
from kevin.feed.runtime import FeedRuntime

log = structlog.get_logger(__name__)

HEARTBEAT = b": heartbeat\n\n"
CHUNK = 64 * 1024  # bytes per write: aiohttp drains the transport past 64 KiB

# The stream ended because its client went away: the request's status is 499 (nginx's
# "client closed request"), not the 200 its headers said.
CLIENT_CLOSED = web.ResponseKey("client_closed", bool)


def encode(update: AnyUpdate) -> bytes:
    data = jsoncodec.dumps(update.body())  # one line: orjson never writes a newline
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (update.seq, update.event.encode(), data)


class ClientTooSlow(Exception):
    pass


async def _write(response: web.StreamResponse, data: bytes, seconds: float) -> None:
    try:
        await asyncio.wait_for(response.write(data), seconds)
    except TimeoutError:
        raise ClientTooSlow() from None


def _chunks(events: list[bytes]) -> list[tuple[bytes, int]]:
    """The events joined into writes of about ``CHUNK`` bytes, each with the size of its
    largest event."""
    out: list[tuple[bytes, int]] = []
    group: list[bytes] = []
    size = 0
    for event in events:
        group.append(event)
        size += len(event)
        if size >= CHUNK:
            out.append((b"".join(group), max(map(len, group))))
            group, size = [], 0
    if group:
        out.append((b"".join(group), max(map(len, group))))
    return out


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


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
        limit = 1
        largest = 0  # bytes: the largest update this stream has sent
        read_at: int | None = None  # the head as of the last page that came back short
        while not watch.closing:
            if _client_gone(request):
                response[CLIENT_CLOSED] = True
                break
            # The head is read BEFORE the query: every seq up to it is committed, so the
            # query sees them all and, if the page is short, nothing new exists until the
            # head moves past it.
            head = watch.head
            if head != read_at:
                updates = await feed.page(after, participant, limit, head)
                if len(updates) < limit:
                    read_at = head
                if updates:
                    after = updates[-1].seq
                    # Only the encoded bytes wait for a slow client, not the rows as well.
                    chunks = _chunks([encode(u) for u in updates])
                    del updates
                    largest = max(largest, *(size for _, size in chunks))
                    while chunks:
                        data, _ = chunks.pop(0)
                        await _write(response, data, options.write_timeout)
                        del data
                    last_write = loop.time()
                    limit = max(1, min(options.batch, 2 * limit,
                                       options.page_bytes // largest))
                    if read_at != head:
                        continue  # a full page: there may be more right away
            silence = options.heartbeat - (loop.time() - last_write)
            if silence <= 0:
                await _write(response, HEARTBEAT, options.write_timeout)
                last_write = loop.time()
                continue
            await watch.wait_beyond(max(head, 0), min(silence, options.client_check))
    except ClientTooSlow:
        log.info("feed: dropping a client that stopped reading", after=after)
        if request.transport is not None:
            request.transport.abort()
    except ConnectionError:
        response[CLIENT_CLOSED] = True  # gone in the middle of a write
    except DatabaseUnavailable:
        # Headers are sent, so no 503 is possible: end the stream; the client resumes
        # with Last-Event-ID from where it got to.
        log.warning("feed: database unavailable, ending the stream", after=after)
    finally:
        feed.active_streams -= 1
    return response
