"""Participant administration."""

from __future__ import annotations

from aiohttp import web

from kevin.api.app_keys import KEVIN
from kevin.api.http import json_response, read_model, require_admin
from kevin.domain.models import ParticipantCreate, ParticipantCreated

routes = web.RouteTableDef()


@routes.post("/v1/participants")
async def create_participant(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_model(request, ParticipantCreate)
    api_key = await request.app[KEVIN].create_participant(body.name)
    return json_response(ParticipantCreated(name=body.name, api_key=api_key), 201)
