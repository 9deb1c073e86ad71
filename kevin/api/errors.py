"""Every error leaves as ``{"error", "message", "details"}`` with one status per class."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from kevin import jsoncodec
from kevin.domain import errors as e
from kevin.feed.sse import CLIENT_CLOSED
from kevin.formats.fx import NotRepresentable
from kevin.formats.records import MalformedRecord, UnreadableFile

log = structlog.get_logger("kevin.http")

STATUS: dict[type[e.KevinError], int] = {
    e.MalformedRequest: 400,
    e.Unauthorized: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.ExistsWithDifferentFields: 409,
    e.ParticipantExists: 409,
    e.TradeCancelled: 409,
    e.Conflict: 409,
    e.CannotMatch: 409,
    e.ProfileClaimed: 409,
    e.ProposalExists: 409,
    e.ProposalNotOpen: 409,
    e.CannotPropose: 409,
    e.AgreementRequired: 409,
    e.VersionConflict: 412,
    e.PayloadTooLarge: 413,
    e.UnsupportedMediaType: 415,
    e.ValidationFailed: 422,
    UnreadableFile: 422,
    MalformedRecord: 422,
    NotRepresentable: 422,
    e.PreconditionRequired: 428,
    e.DatabaseUnavailable: 503,
}

# aiohttp's own refusals (no route, wrong method, body too large) in the contract's shape.
HTTP_CODES = {
    404: ("not_found", "no such resource"),
    405: ("method_not_allowed", "this method is not allowed here"),
    413: ("payload_too_large", "the request body is larger than 1 MiB"),
}


# A 401 names the scheme to use (RFC 9110 §11.6.1); a 503 says when to try again.
_ERROR_HEADERS = {401: {"WWW-Authenticate": 'Bearer realm="kevin"'}, 503: {"Retry-After": "1"}}


def status_of(error: e.KevinError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": code, "message": message, "details": details}
    return web.Response(status=status, body=jsoncodec.dumps(body),
                        content_type="application/json", headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


REQUEST_ID = web.RequestKey("request_id", str)
# A client's X-Request-ID is kept when it is printable ASCII of at most 128 characters
# (it is echoed in a header and on every log line: no control bytes, no megabytes), and
# replaced by a fresh one otherwise.
_CLIENT_REQUEST_ID = re.compile(r"[ -~]{1,128}")


def request_id_for(request: web.Request) -> str:
    sent = request.headers.get("X-Request-ID")
    if sent is not None and _CLIENT_REQUEST_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


async def echo_request_id(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: every response says its request id, a stream's too (its
    headers leave long before its handler returns)."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers["X-Request-ID"] = request_id


def reported_status(response: web.StreamResponse) -> int:
    """The status logs and metrics report: 499 for a stream whose client went away."""
    return 499 if response.get(CLIENT_CLOSED) else response.status


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request id on every log line; one access line per request; errors mapped."""
    request_id = request[REQUEST_ID] = request_id_for(request)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    response = await _mapped(request, handler)
    log.info("request", method=request.method, path=request.path,
             status=reported_status(response),
             duration_ms=round((time.perf_counter() - started) * 1000, 3))
    return response


async def _mapped(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except e.KevinError as error:
        status = status_of(error)
        return error_response(status, error.code, error.message, error.details,
                              _ERROR_HEADERS.get(status))
    except web.HTTPException as http:
        if http.status in HTTP_CODES:
            code, message = HTTP_CODES[http.status]
            headers = {"Allow": http.headers["Allow"]} if "Allow" in http.headers else None
            return error_response(http.status, code, message, None, headers)
        raise
    except Exception:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "an internal error occurred; it is logged")
