"""The HTTP server under the app: aiohttp's, with deadlines for clients that dawdle, and
its own refusals in the error shape.

aiohttp times a connection only while it is idle between requests (``keepalive_timeout``),
so a client that sends a request head one byte at a time keeps its connection, and the
memory behind it, for as long as it likes. Here a connection must send a complete request
head within ``head_timeout`` seconds: from when it opens, and for each later request on it
from that request's first byte. Past that it is answered ``408`` in the error shape and
closed.

A request aiohttp cannot parse (a request line over 8,190 bytes, a header with a byte no
header may hold, a method that is no token) never reaches the app or its middlewares:
aiohttp answers it itself, in text/plain (aiohttp#3287 asks for a hook; there is none).
``handle_error`` gives that answer the ``{"error", "message", "details"}`` shape like every
other error, with the status aiohttp chose. The message names the kind of fault, never the
offending bytes (a header line may hold a key).
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import http_exceptions as hx
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from kevin import jsoncodec

log = structlog.get_logger("kevin.http")

HEAD_TIMEOUT = 10.0  # seconds (KEVIN_REQUEST_HEAD_TIMEOUT)
KEEPALIVE_TIMEOUT = 75.0  # seconds an idle keep-alive connection is kept (nginx's default)

_TIMEOUT_BODY = jsoncodec.dumps({
    "error": "request_timeout",
    "message": "the request head did not arrive in time", "details": None})
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))


# The kinds of request aiohttp refuses before the app sees it, most specific first.
_REFUSALS: tuple[tuple[type[BaseException], str], ...] = (
    (hx.LineTooLong, "a line of the request head is longer than the server takes (8,190 bytes)"),
    (hx.BadHttpMethod, "the request method is not an HTTP token"),
    (hx.BadStatusLine, "the request line is not HTTP"),
    (hx.InvalidHeader, "a header name or value holds a byte HTTP does not allow"),
    (hx.InvalidURLError, "the request target is not a valid URL"),
    (hx.ContentLengthError, "the body does not match its Content-Length"),
    (hx.TransferEncodingError, "the body's transfer encoding is not valid"),
    (hx.HttpProcessingError, "the request is not valid HTTP"),
)


def refusal_response(status: int, exc: BaseException | None) -> web.Response:
    """aiohttp's own error answer, in the contract's error shape."""
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
    code = "internal_error" if status >= 500 else phrase.lower().replace(" ", "_")
    message = next((text for kind, text in _REFUSALS if isinstance(exc, kind)),
                   "an internal error occurred; it is logged" if status >= 500
                   else phrase.lower())
    body = {"error": code, "message": message,
            "details": {"reason": type(exc).__name__} if exc is not None and status < 500
            else None}
    response = web.Response(status=status, body=jsoncodec.dumps(body),
                            content_type="application/json")
    response.force_close()
    return response


class _RequestHandler(RequestHandler):
    """One connection: aiohttp's handler and a deadline for each request head."""

    def __init__(self, manager: web.Server, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_deadline: asyncio.TimerHandle | None = None
        # A head has begun (or the connection opened) and not yet been parsed whole.
        self._head_pending = False
        self._last_body: Any = None  # the payload of the last head parsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_pending = True
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        in_body = self._last_body is not None and not self._last_body.is_eof()
        heads = self._request_count  # aiohttp counts every head it parsed (or refused)
        super().data_received(data)
        if self._request_count != heads:
            self._head_pending = False
            self._last_body = self._messages[-1][1] if self._messages else None
            self._disarm_head_deadline()
        elif data and not in_body and not self._head_pending:
            # The first bytes of the next request on a kept-alive connection. (aiohttp
            # also calls this with no bytes, to parse what it held while reading was
            # paused: a large body's, say — that starts no head.)
            self._head_pending = True
            self._arm_head_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # aiohttp's own logging and its check that nothing was sent yet, then our body.
        super().handle_error(request, status, exc, message)
        return refusal_response(status, exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self._loop.call_later(self._head_timeout, self._head_overdue)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_overdue(self) -> None:
        self._head_deadline = None
        if not self._head_pending or self.transport is None:
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            # The previous request is still being answered (the pending head is
            # pipelined behind it): look again once more time has passed.
            self._arm_head_deadline()
            return
        log.info("closing a connection that sent no complete request head in time",
                 peer=str(self.peername), seconds=self._head_timeout)
        self.transport.write(_TIMEOUT_RESPONSE)
        self.force_close()  # the transport sends what it holds, then closes


class _Server(web.Server):
    def __init__(self, *args: Any, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout = head_timeout

    def __call__(self) -> RequestHandler:
        return _RequestHandler(self, loop=self._loop, head_timeout=self.head_timeout,
                               **self._kwargs)


class AppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections have a deadline for their request heads."""

    def __init__(self, app: web.Application, *, head_timeout: float = HEAD_TIMEOUT,
                 **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT)
        super().__init__(app, **kwargs)
        self.head_timeout = head_timeout

    async def _make_server(self) -> web.Server:
        # The app's own server (startup signals, handler arguments), rebuilt with our
        # connection handler: aiohttp has no setting for it.
        server = await super()._make_server()
        return _Server(server.request_handler, request_factory=server.request_factory,
                       handler_cancellation=server.handler_cancellation,
                       loop=asyncio.get_running_loop(), head_timeout=self.head_timeout,
                       **server._kwargs)
