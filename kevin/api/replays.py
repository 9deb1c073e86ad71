"""Replays (admin): re-run matching from an instant under other rules; show or apply."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from kevin.api.app_keys import KEVIN
from kevin.api.http import json_response, read_model, require_admin
from kevin.domain import errors as e
from kevin.domain.replay import ReplayRequest
from kevin.engine.replay import Replayer

routes = web.RouteTableDef()

ADMIN_ACTOR = "admin"


@routes.post("/v1/replays")
async def replay(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_model(request, ReplayRequest)
    result = await Replayer(request.app[KEVIN].pool).replay(
        body.since, body.rules, apply=body.apply, actor=ADMIN_ACTOR, profiles=body.profiles)
    return json_response(result)


@routes.get("/v1/replays/{replay_id}")
async def replay_record(request: web.Request) -> web.Response:
    await require_admin(request)
    try:
        replay_id = UUID(request.match_info["replay_id"])
    except ValueError:
        raise e.NotFound("no such replay") from None
    return json_response(await Replayer(request.app[KEVIN].pool).record(replay_id))
