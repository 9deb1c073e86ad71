"""``POST /v1/trades/batch``: many trades in one request, as NDJSON, one line each.

Each line stands alone: a line that is not JSON, or not a valid trade, is reported
``invalid`` with the error a single ``POST /v1/trades`` would have given, and spoils no
other line. The valid lines are submitted together (kevin.engine.batch): created,
recognised as idempotent resubmissions (``exists``), or refused as conflicts
(``exists_with_different_fields``), each matched like a single submission.

Limits: at most 10,000 lines (blank lines are skipped and not counted) and 16 MiB of
body — this route's own limit, room for 10,000 lines of about 1.6 KiB each; every other
route keeps 1 MiB. Over either limit the whole request is refused with 413.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import orjson
from aiohttp import web
from pydantic import ValidationError

from kevin import heap, jsoncodec
from kevin.api.app_keys import KEVIN
from kevin.api.http import authenticate, require_participant, validation_details
from kevin.api.metrics import LINES, LinesAnswered, lines_answered
from kevin.domain import errors as e
from kevin.domain.models import Trade, TradeSubmission, plain_dump, plain_submission
from kevin.engine.batch import MAX_LINES
from kevin.feed.sse import CLIENT_CLOSED

routes = web.RouteTableDef()

CONTENT_TYPE = "application/x-ndjson"
MAX_BATCH_BODY = 16 * 1024 * 1024


def _error(error: e.KevinError) -> dict[str, Any]:
    return {"error": error.code, "message": error.message, "details": error.details}


async def read_batch_body(request: web.Request) -> bytes:
    """The body, refused with 413 past MAX_BATCH_BODY (read here, not by aiohttp, whose
    limit for the application is 1 MiB)."""
    if request.content_length is not None and request.content_length > MAX_BATCH_BODY:
        raise e.PayloadTooLarge("a batch body is at most 16 MiB")
    body = bytearray()
    async for chunk in request.content.iter_chunked(256 * 1024):
        body += chunk
        if len(body) > MAX_BATCH_BODY:
            raise e.PayloadTooLarge("a batch body is at most 16 MiB")
    return bytes(body)


def parse_line(raw: bytes, participant: str) -> TradeSubmission | dict[str, Any]:
    """A line's submission, or the error (contract shape) that makes it invalid.

    A line in the plainest form (plain_submission) is read by orjson and built without
    pydantic's validation, a third of the cost; any other line, valid or not, goes the
    exact way (``validate_line``)."""
    try:
        submission = plain_submission(orjson.loads(raw))
    except orjson.JSONDecodeError:
        submission = None
    if submission is None:
        return validate_line(raw, participant)
    return _own_trade(submission, participant) or submission


def validate_line(raw: bytes, participant: str) -> TradeSubmission | dict[str, Any]:
    """``parse_line`` the exact way: jsoncodec, then the model."""
    try:
        data = jsoncodec.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        return _error(e.MalformedRequest(f"the line is not valid JSON: {error}"))
    try:
        submission = TradeSubmission.model_validate(data)
    except ValidationError as error:
        return _error(e.ValidationFailed("the line is not a valid trade",
                                         validation_details(error)))
    return _own_trade(submission, participant) or submission


def _own_trade(submission: TradeSubmission, participant: str) -> dict[str, Any] | None:
    if submission.counterparty == participant:
        return _error(e.ValidationFailed(
            "a trade needs another participant as counterparty",
            [{"field": "counterparty", "message": "must not be yourself"}]))
    return None


@routes.post("/v1/trades/batch")
async def submit_batch(request: web.Request) -> web.Response:
    participant = require_participant(await authenticate(request))
    if request.content_type != CONTENT_TYPE:
        raise e.UnsupportedMediaType(
            f"expected Content-Type {CONTENT_TYPE}, not {request.content_type or 'none'}")
    body = await read_batch_body(request)
    # The collector paused from the first line parsed until the lines, submissions and
    # outcomes are freed (``_submitted``'s locals, when it returns, once it has sent the
    # answer): resumed with them still alive, its first pass would walk every one of
    # them (heap.collector_paused).
    with heap.collector_paused():
        return await _submitted(request, participant, body)


async def _submitted(request: web.Request, participant: str, body: bytes) -> web.Response:
    lines = [(number, raw) for number, raw in enumerate(body.split(b"\n"), 1)
             if raw.strip()]
    if len(lines) > MAX_LINES:
        raise e.PayloadTooLarge(f"a batch has at most {MAX_LINES} lines, not {len(lines)}",
                                {"max_lines": MAX_LINES, "lines": len(lines)})
    results: list[dict[str, Any]] = []
    valid: list[tuple[int, TradeSubmission]] = []
    for number, raw in lines:
        parsed = parse_line(raw, participant)
        if isinstance(parsed, TradeSubmission):
            valid.append((len(results), parsed))
            results.append({"line": number, "result": None, "trade": None, "error": None})
        else:
            results.append({"line": number, "result": "invalid", "trade": None,
                            "error": parsed})
    outcomes = await request.app[KEVIN].submit_batch(participant, [s for _, s in valid])
    response = results_response(request, results, [index for index, _ in valid], outcomes)
    # Sent before this frame's lines, submissions and outcomes are freed (some 0.03 s
    # for 10,000 lines, and the collector's pass after): the client reads its answer
    # meanwhile.
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        response[CLIENT_CLOSED] = True  # gone before its answer
    return response


class Outcome(Protocol):
    """What the engine made of one line or record (a batch's or an import's)."""

    @property
    def result(self) -> str: ...
    @property
    def trade(self) -> Trade | None: ...
    @property
    def error(self) -> dict[str, Any] | None: ...


def results_answer(results: list[dict[str, Any]], indices: list[int],
                   outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """``{"results": [...]}``: the lines refused before the engine as they are, and each
    other line (at ``indices``) completed from the engine's outcome for it — its trade
    as ``jsoncodec.dumps`` writes it (``plain_dump``: the bytes of its model_dump)."""
    for index, outcome in zip(indices, outcomes, strict=True):
        result = results[index]
        result["result"] = outcome.result
        trade = outcome.trade
        result["trade"] = plain_dump(trade) if trade is not None else None
        result["error"] = outcome.error
    return {"results": results}


def results_body(results: list[dict[str, Any]], indices: list[int],
                 outcomes: Sequence[Outcome]) -> tuple[bytes, LinesAnswered]:
    """``results_answer`` as JSON, and counted for the metrics. Nothing of it is kept as
    Python values: freed with the request's lines and outcomes, while the collector is
    still paused, it is never walked."""
    answer = results_answer(results, indices, outcomes)
    return jsoncodec.dumps(answer), lines_answered(answer)


def results_response(request: web.Request, results: list[dict[str, Any]],
                     indices: list[int], outcomes: Sequence[Outcome]) -> web.Response:
    """``results_body`` as the response."""
    body, request[LINES] = results_body(results, indices, outcomes)
    heap.trim_soon()
    return web.Response(body=body, content_type="application/json")
