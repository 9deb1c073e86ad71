"""Alleged trades: what other participants say they traded with me, not matched yet."""

from __future__ import annotations

from aiohttp import web

from kevin.api.app_keys import KEVIN
from kevin.api.http import (
    acting_participant,
    authenticate,
    json_response,
    query_flag,
    query_int,
)
from kevin.api.trades import _decode_cursor, _encode_cursor
from kevin.domain.match_models import AllegedPage, AllegedTrade

routes = web.RouteTableDef()


@routes.get("/v1/alleged")
async def alleged(request: web.Request) -> web.Response:
    participant = acting_participant(request, await authenticate(request))
    cursor = request.query.get("cursor")
    page = await request.app[KEVIN].alleged(
        participant, request.query.get("product") or None,
        _decode_cursor(cursor) if cursor else ("", ""),
        query_int(request, "limit", 1000, 1, 1000), query_flag(request, "overdue"))
    next_cursor = _encode_cursor(page.next_after) if page.next_after else None
    return json_response(AllegedPage(trades=[AllegedTrade.of(t) for t in page.trades],
                                     next_cursor=next_cursor))
