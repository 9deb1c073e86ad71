"""``GET /v1/feed``: the match feed as Server-Sent Events or as JSON pages."""

from __future__ import annotations

from aiohttp import web

from kevin.api.http import authenticate, json_response, query_int
from kevin.domain import errors as e
from kevin.domain.feed import FeedPage
from kevin.feed import sse
from kevin.feed.runtime import FEED

routes = web.RouteTableDef()

MAX_SEQ = 2**63 - 1
MAX_WAIT = 5  # seconds; short enough for any proxy or client timeout, re-poll for more


def _position(request: web.Request) -> int:
    """Where to resume: Last-Event-ID (a reconnecting EventSource sends it, while its URL
    still carries the original ?after=) wins over ?after=; 0 means from the start. Both
    are validated when present."""
    found: list[int] = []
    for name, raw in (("Last-Event-ID", request.headers.get("Last-Event-ID")),
                      ("after", request.query.get("after"))):
        if raw is None:
            continue
        text = raw.strip()
        if not (text.isascii() and text.isdigit()) or int(text) > MAX_SEQ:
            raise e.ValidationFailed(f"{name} must be a feed seq (a non-negative integer)",
                                     [{"field": name, "message": "expected e.g. 1042"}])
        found.append(int(text))
    return found[0] if found else 0


def _wants_events(request: web.Request) -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


@routes.get("/v1/feed")
async def get_feed(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    participant = principal.participant
    if principal.is_admin:
        participant = request.query.get("participant") or None  # admin: all, or one
    elif request.query.get("participant") not in (None, participant):
        raise e.Forbidden("a participant reads only its own feed")
    after = _position(request)
    feed = request.app[FEED]
    if _wants_events(request):
        return await sse.stream(request, feed, after, participant)
    limit = query_int(request, "limit", 100, 1, 1000)
    wait = query_int(request, "wait", 0, 0, MAX_WAIT)
    head = feed.watch.head
    updates = await feed.page(after, participant, limit, head)
    if not updates and wait and await feed.watch.wait_beyond(max(head, 0), wait):
        # Long-poll: one more look, up to the head that woke us.
        updates = await feed.page(after, participant, limit, feed.watch.head)
    last_seq = updates[-1].seq if updates else after
    return json_response(FeedPage(updates=updates, last_seq=last_seq))
