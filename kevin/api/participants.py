"""Participant administration."""

from __future__ import annotations

import re

from aiohttp import web

from kevin.api.app_keys import KEVIN
from kevin.api.http import json_response, read_model, require_admin
from kevin.domain import errors as e
from kevin.domain.models import PARTICIPANT_PATTERN, ParticipantCreate, ParticipantCreated
from kevin.domain.participants import Participant, ParticipantUpdate

routes = web.RouteTableDef()


@routes.post("/v1/participants")
async def create_participant(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_model(request, ParticipantCreate)
    api_key = await request.app[KEVIN].create_participant(body.name)
    return json_response(ParticipantCreated(name=body.name, api_key=api_key), 201)


@routes.put("/v1/participants/{name}")
async def update_participant(request: web.Request) -> web.Response:
    """Register the participant's BIC (admin): SWIFT MT300 and FpML name parties by BIC."""
    await require_admin(request)
    name = request.match_info["name"]
    if not re.fullmatch(PARTICIPANT_PATTERN, name):
        raise e.NotFound(f"no participant {name!r}")
    body = await read_model(request, ParticipantUpdate)
    await request.app[KEVIN].set_bic(name, body.bic)
    return json_response(Participant(name=name, bic=body.bic))
