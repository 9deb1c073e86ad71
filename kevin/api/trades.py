"""Trade endpoints: parse, authorise, call the engine, shape the response."""

from __future__ import annotations

import base64
import binascii
import re

from aiohttp import web

from kevin import jsoncodec
from kevin.api.app_keys import KEVIN
from kevin.api.http import (
    acting_participant,
    authenticate,
    if_match,
    json_response,
    parse_model,
    query_flag,
    query_instant,
    query_int,
    query_participant,
    read_json,
    require_participant,
)
from kevin.domain import errors as e
from kevin.domain.models import (
    TRADE_ID_PATTERN,
    Status,
    Trade,
    TradeAmendment,
    TradePage,
    TradeSubmission,
    TradeTerms,
    TradeVersions,
)
from kevin.domain.queries import PageQuery

routes = web.RouteTableDef()

STATUSES: tuple[Status, ...] = ("unmatched", "matched", "mismatched", "cancelled")


def trade_id_in_path(request: web.Request) -> str:
    """The trade_id in the path. One that breaks the pattern names no trade anyone could
    have submitted: 404 like any unknown trade (and no such text reaches the database)."""
    trade_id = request.match_info["trade_id"]
    if not _TRADE_ID.fullmatch(trade_id):
        raise e.NotFound(f"no trade {trade_id!r}")
    return trade_id


_TRADE_ID = re.compile(TRADE_ID_PATTERN)


def _trade_response(trade: Trade, status: int = 200) -> web.Response:
    headers = {"ETag": trade.etag}
    if status == 201:
        headers["Location"] = f"/v1/trades/{trade.trade_id}"
    return json_response(trade, status, headers)


@routes.post("/v1/trades")
async def submit_trade(request: web.Request) -> web.Response:
    participant = require_participant(await authenticate(request))
    submission = parse_model(TradeSubmission, await read_json(request))
    if submission.counterparty == participant:
        raise e.ValidationFailed("a trade needs another participant as counterparty",
                                 [{"field": "counterparty", "message": "must not be yourself"}])
    result, trade = await request.app[KEVIN].submit(participant, submission)
    return _trade_response(trade, 201 if result == "created" else 200)


@routes.put("/v1/trades/{trade_id}")
async def amend_trade(request: web.Request) -> web.Response:
    participant = require_participant(await authenticate(request))
    trade_id = trade_id_in_path(request)
    amendment = parse_model(TradeAmendment, await read_json(request))
    if amendment.trade_id is not None and amendment.trade_id != trade_id:
        raise e.ValidationFailed("trade_id in the body differs from the path",
                                 [{"field": "trade_id", "message": "must equal the path's"}])
    if amendment.counterparty == participant:
        raise e.ValidationFailed("a trade needs another participant as counterparty",
                                 [{"field": "counterparty", "message": "must not be yourself"}])
    terms = TradeTerms.model_validate(amendment.model_dump(exclude={"trade_id"}))
    trade = await request.app[KEVIN].amend(participant, trade_id, if_match(request), terms)
    return _trade_response(trade)


@routes.delete("/v1/trades/{trade_id}")
async def cancel_trade(request: web.Request) -> web.Response:
    participant = require_participant(await authenticate(request))
    trade = await request.app[KEVIN].cancel(
        participant, trade_id_in_path(request), if_match(request))
    return _trade_response(trade)


def seen_version(request: web.Request) -> int | None:
    """The newest version named by If-None-Match (ETags ``"3"``, ``W/"3"``, a list of
    them): the caller has seen it, so a read on a replica that has not replayed it yet
    is read again on the primary. Anything else names no version: None."""
    raw = request.headers.get("If-None-Match")
    if raw is None:
        return None
    versions = [int(v) for v in _ETAG_VERSION.findall(raw)]
    return max(versions) if versions else None


_ETAG_VERSION = re.compile(r'(?:W/)?"([0-9]{1,18})"')


@routes.get("/v1/trades/{trade_id}")
async def get_trade(request: web.Request) -> web.Response:
    participant = acting_participant(request, await authenticate(request))
    trade = await request.app[KEVIN].read(
        participant, trade_id_in_path(request), query_instant(request), seen_version(request))
    return _trade_response(trade)


@routes.get("/v1/trades/{trade_id}/versions")
async def trade_versions(request: web.Request) -> web.Response:
    participant = acting_participant(request, await authenticate(request))
    found = await request.app[KEVIN].versions(participant, trade_id_in_path(request),
                                              seen_version(request))
    return json_response(TradeVersions(versions=found))


def _encode_cursor(after: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(jsoncodec.dumps(list(after))).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        participant, trade_id = jsoncodec.loads(base64.urlsafe_b64decode(padded))
        if isinstance(participant, str) and isinstance(trade_id, str):
            return participant, trade_id
    except (ValueError, TypeError, binascii.Error):
        pass
    raise e.ValidationFailed("cursor is not one this service issued",
                             [{"field": "cursor", "message": "use next_cursor as given"}])


@routes.get("/v1/trades")
async def list_trades(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    participant = query_participant(request) if principal.is_admin \
        else acting_participant(request, principal)
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise e.ValidationFailed("unknown status", [{"field": "status",
                                                     "message": f"one of {', '.join(STATUSES)}"}])
    cursor = request.query.get("cursor")
    query = PageQuery(
        participant=participant, status=status, product=request.query.get("product") or None,
        after=_decode_cursor(cursor) if cursor else ("", ""),
        limit=query_int(request, "limit", 100, 1, 1000), as_of=query_instant(request),
    )
    page = await request.app[KEVIN].list(query, query_flag(request, "overdue"))
    next_cursor = _encode_cursor(page.next_after) if page.next_after else None
    return json_response(TradePage(trades=page.trades, next_cursor=next_cursor))
