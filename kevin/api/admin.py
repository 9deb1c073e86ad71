"""Operator overrides (admin): force a match, break one."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from kevin.api.app_keys import KEVIN
from kevin.api.http import json_response, parse_model, read_json, read_model, require_admin
from kevin.domain import errors as e
from kevin.domain.match_models import BreakMatch, ForceMatch, MatchLegs

routes = web.RouteTableDef()

ADMIN_ACTOR = "admin"


@routes.post("/v1/admin/matches")
async def force_match(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_model(request, ForceMatch)
    legs = [(leg.participant, leg.trade_id) for leg in body.legs]
    first, second = await request.app[KEVIN].force_match(legs, body.comment, ADMIN_ACTOR)
    assert first.match is not None
    return json_response(MatchLegs(match_id=first.match.match_id, legs=[first, second]), 201)


@routes.delete("/v1/admin/matches/{match_id}")
async def break_match(request: web.Request) -> web.Response:
    await require_admin(request)
    try:
        match_id = UUID(request.match_info["match_id"])
    except ValueError:
        raise e.NotFound("no such match") from None
    # The body (the comment) is optional: a bare DELETE breaks without one.
    body = parse_model(BreakMatch, await read_json(request)) if request.can_read_body \
        else BreakMatch()
    legs = await request.app[KEVIN].break_match(match_id, body.comment, ADMIN_ACTOR)
    return json_response(MatchLegs(match_id=match_id, legs=legs))
